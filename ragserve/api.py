"""The HTTP API: routes, request bounds and the one place that maps errors to HTTP.

``create_app(pipeline_provider)`` returns a FastAPI app; the ingress deployment hands it to
``@serve.ingress``. The provider returns the ``RAGPipeline`` (so the app can be built before the
pipeline exists, and tests can build it around in-process stages).
"""

from __future__ import annotations

import json
import logging
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragserve.cache.pipeline import CachedPipeline
from ragserve.errors import PayloadTooLargeError, RagServeError, StageUnavailableError
from ragserve.pipeline import RAGPipeline
from ragserve.schemas import (
    DeleteResponse,
    DocumentChunks,
    EmbeddingsRequest,
    EmbeddingsResponse,
    IngestRequest,
    IngestResponse,
    QueryRequest,
    QueryResponse,
    SearchRequest,
    SearchResponse,
)

__all__ = ["create_app", "error_response"]

log = logging.getLogger("ragserve.api")

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "Not found"},
    413: {"description": "Request too large"},
    422: {"description": "Invalid request"},
    503: {"description": "A stage is unavailable; retry later (see Retry-After)"},
}


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _validation_message(errors: list[dict]) -> str:
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def _clean_errors(errors: list[dict]) -> list[dict]:
    # Drop the echoed input: it can be large, and request bodies may hold personal data.
    return [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors[:20]]


def create_app(
    pipeline: Callable[[], RAGPipeline | CachedPipeline],
    *,
    max_request_bytes: int = 20_000_000,
    title: str = "ragserve",
) -> FastAPI:
    app = FastAPI(
        title=title,
        version="0.1.0",
        description="Retrieval-augmented generation on Ray Serve: embed → retrieve → rerank → generate.",
    )

    # ---------------------------------------------------------------- error mapping (one place)

    @app.exception_handler(RagServeError)
    async def _ragserve_error(_: Request, exc: RagServeError) -> JSONResponse:
        headers = {"Retry-After": "1"} if isinstance(exc, StageUnavailableError) else None
        if exc.status_code >= 500:
            log.warning("request failed: %s: %s", exc.code, exc.message)
        return error_response(exc.status_code, exc.code, exc.message, exc.details or None, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        return error_response(422, "invalid_request", _validation_message(errors), _clean_errors(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error (%s)", type(exc).__name__)
        return error_response(500, "internal_error", "internal error; see the service logs")

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_request_bytes:
            exc = PayloadTooLargeError(
                f"request body is {int(length)} bytes; the limit is {max_request_bytes}"
            )
            return error_response(exc.status_code, exc.code, exc.message)
        return await call_next(request)

    # ---------------------------------------------------------------- routes

    @app.get("/healthz", tags=["health"], summary="Liveness: the ingress answers.")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: every stage is loaded and answers.")
    async def readyz() -> JSONResponse:
        ready, stages = await pipeline().readiness()
        return JSONResponse({"ready": ready, "stages": stages}, status_code=200 if ready else 503)

    @app.post("/v1/search", response_model=SearchResponse, responses=_ERROR_RESPONSES,
              tags=["rag"], summary="Retrieve and rerank passages (no generation).")
    async def search(req: SearchRequest) -> SearchResponse:
        return await pipeline().search(req)

    @app.post("/v1/query", response_model=QueryResponse, responses=_ERROR_RESPONSES,
              tags=["rag"], summary="Answer a question from the indexed documents, with citations.")
    async def query(req: QueryRequest):
        if req.stream:
            return StreamingResponse(
                _sse(pipeline().query_events(req)),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await pipeline().query(req)

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse, responses=_ERROR_RESPONSES,
              tags=["rag"], summary="Embed texts with the service's embedder (OpenAI-style).")
    async def embeddings(req: EmbeddingsRequest) -> EmbeddingsResponse:
        return await pipeline().embed(req)

    @app.post("/v1/documents", response_model=IngestResponse, responses=_ERROR_RESPONSES,
              tags=["documents"], summary="Add or replace documents (idempotent).")
    async def ingest(req: IngestRequest) -> IngestResponse:
        return await pipeline().ingest(req)

    @app.get("/v1/documents/{doc_id:path}", response_model=DocumentChunks,
             responses=_ERROR_RESPONSES, tags=["documents"], summary="A document's chunks.")
    async def get_document(doc_id: str) -> DocumentChunks:
        return await pipeline().get_document(doc_id)

    @app.delete("/v1/documents/{doc_id:path}", response_model=DeleteResponse,
                responses=_ERROR_RESPONSES, tags=["documents"], summary="Delete a document.")
    async def delete_document(doc_id: str) -> DeleteResponse:
        return await pipeline().delete_document(doc_id)

    return app


async def _sse(events: AsyncIterator[tuple[str, dict]]) -> AsyncIterator[bytes]:
    try:
        async for event, data in events:
            yield f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()
    except RagServeError as exc:
        yield f"event: error\ndata: {json.dumps(exc.to_dict())}\n\n".encode()
