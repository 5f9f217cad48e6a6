"""The one place errors become HTTP responses: ``{"error": {"code", "message", "details"}}``.

``RagServeError`` subclasses carry their status; request validation is 422; Starlette's own
HTTP errors keep their status with a ragserve code; anything else is a 500 whose body says
nothing about the fault (the log has it, without request content).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragserve.edge.context import REQUEST_ID
from ragserve.errors import RagServeError, StageUnavailableError
from ragserve.observability.service import note_error

__all__ = ["error_response", "install_error_handlers", "validation_message", "ERROR_RESPONSES",
           "ErrorResponse"]

log = logging.getLogger("ragserve.edge")

_HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 415: "unsupported_media_type"}


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. 'invalid_request'.")
    message: str = Field(description="What was wrong, for people.")
    details: dict[str, Any] | list[dict[str, Any]] = Field(
        default_factory=dict,
        description="Structured facts: the field errors of a 422, the limit and size of a 413, "
        "the path or id of a 404, the backends tried of a 503; {} when there are none.")
    request_id: str | None = Field(default=None, description="The request's X-Request-ID.")


class ErrorResponse(BaseModel):
    """Every error: ``{"error": {"code", "message", "details", "request_id"}}``."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse,
          "description": "Missing or invalid API key (Authorization: Bearer <key>)"},
    403: {"model": ErrorResponse, "description": "The API key lacks the scope this operation needs"},
    429: {"model": ErrorResponse,
          "description": "The key's request or token limit is reached (see Retry-After and "
                         "RateLimit-* headers)"},
    400: {"model": ErrorResponse,
          "description": "The body is not valid JSON: not UTF-8, malformed, or nested too deep"},
    404: {"model": ErrorResponse, "description": "Not found"},
    413: {"model": ErrorResponse,
          "description": "Request too large: the body, a query, a document or the document count"},
    415: {"model": ErrorResponse,
          "description": "The body is not JSON (send Content-Type: application/json)"},
    422: {"model": ErrorResponse, "description": "Invalid request"},
    503: {"model": ErrorResponse,
          "description": "A stage is unavailable; retry later (see Retry-After)"},
}


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    note_error(code)  # the error type, for ragserve_errors_total and the request log
    body["details"] = details or {}
    rid = REQUEST_ID.get()
    if rid:
        body["request_id"] = rid
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def validation_message(errors: list[dict]) -> str:
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def _clean_errors(errors: list[dict]) -> list[dict]:
    # Drop the echoed input: it can be large, and request bodies may hold personal data.
    return [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors[:20]]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RagServeError)
    async def _ragserve_error(_: Request, exc: RagServeError) -> JSONResponse:
        headers = getattr(exc, "headers", None) or (  # 401/429 carry their own headers
            {"Retry-After": "1"} if isinstance(exc, StageUnavailableError) else None)
        if exc.status_code >= 500:
            log.warning("request failed: %s: %s", exc.code, exc.message)
        return error_response(exc.status_code, exc.code, exc.message, exc.details or None, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        return error_response(422, "invalid_request", validation_message(errors),
                              _clean_errors(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in message:
            # FastAPI's own words for a body json.loads could not read (invalid UTF-8,
            # nesting too deep for the parser): say which.
            message = ("the body is not valid JSON: it must be UTF-8 and nested less deeply "
                       "(metadata at most 8 levels)")
        details: dict[str, Any] = {"path": request.url.path}
        if exc.status_code == 405 and exc.headers and "Allow" in exc.headers:
            details["allowed"] = exc.headers["Allow"]
        return error_response(exc.status_code, code, message, details, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error (%s)", type(exc).__name__)
        return error_response(500, "internal_error", "internal error; see the service logs")
