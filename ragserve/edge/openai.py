"""OpenAI-compatible routes over the ``RagService``: ``POST /v1/chat/completions`` and
``GET /v1/models`` (and ``GET /v1/models/{id}``).

Contracts:

- ``messages`` drives retrieval as a session does: the last message must be the user's
  question; earlier user turns, each with the assistant reply after it (or ``""``), are the
  ``history`` (retrieval prepends the last questions, the generator sees the turns). System
  and developer messages are accepted and not used: the service's own prompt numbers the
  passages it answers from.
- The reply is the generator's text, with the ``[n]`` markers the prompt asks it for;
  ``usage`` is the generator's own count (prompt and completion tokens); ``finish_reason``
  is the generator's (``stop`` or ``length``). The passages the answer was given, numbered as
  it cites them (``cited`` says which it did), come in the extension field ``citations``
  (OpenAI clients ignore unknown fields), and ``ragserve`` holds timings, backends, the cache
  result and warnings. Streamed, the first chunk carries ``citations`` and the last one
  ``ragserve``; with ``stream_options.include_usage`` a final chunk with empty ``choices``
  carries ``usage``; ``data: [DONE]`` ends the stream.
- Extension request fields: ``top_k``, ``rerank_top_n``, ``filters``, ``mode`` (as
  ``/v1/query``), ``return_passages`` (default true) and ``session_id``. Sampling parameters
  (``temperature``, ``top_p``, ``stop``, ...) are accepted and ignored: the generator's
  config decides them. ``n`` other than 1 is refused.
- ``model`` must name what is served (the application's name, ``GET /v1/models``): another
  name is a 404 ``model_not_found``.
- Errors on these routes use OpenAI's shape, ``{"error": {"message", "type", "param",
  "code"}}``, with OpenAI's statuses: invalid input 400, unknown model 404, 401/403/429 from the
  guard's checks, 503 (with ``Retry-After``) when a stage is down — including a generator
  that could not answer, which ``/v1/query`` would report as a degraded answer without text.
  An error after a stream started is sent as one ``data: {"error": ...}`` event.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, AsyncIterator, Callable, Literal, Union

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragserve.config import RetrievalMode
from ragserve.edge.context import REQUEST_ID, RequestContext
from ragserve.edge.errors import validation_message
from ragserve.errors import (
    InvalidRequestError,
    NotFoundError,
    RagServeError,
    StageUnavailableError,
)
from ragserve.schemas import QueryRequest
from ragserve.service import RagService

__all__ = ["ChatCompletionRequest", "openai_router", "openai_error"]

log = logging.getLogger("ragserve.edge")

# OpenAI's error types by status (what its SDKs read to pick an exception class).
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "invalid_request_error",
                413: "invalid_request_error", 429: "rate_limit_exceeded",
                503: "service_unavailable"}


def openai_error(status: int, message: str, *, code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None,
                 ) -> JSONResponse:
    """An error in OpenAI's shape (with ragserve's request id as an extra field)."""
    body: dict[str, Any] = {"message": message,
                            "type": _ERROR_TYPES.get(status, "server_error"),
                            "param": param, "code": code}
    rid = REQUEST_ID.get()
    if rid:
        body["request_id"] = rid
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _from_exception(exc: Exception) -> JSONResponse:
    if isinstance(exc, RequestValidationError):
        errors = list(exc.errors())
        loc = [str(p) for p in (errors[0].get("loc", ()) if errors else ()) if p != "body"]
        return openai_error(400, validation_message(errors), code="invalid_request",
                            param=".".join(loc) or None)
    if isinstance(exc, RagServeError):
        status = 400 if exc.status_code == 422 else exc.status_code
        headers = {"Retry-After": "1"} if isinstance(exc, StageUnavailableError) else None
        if status >= 500:
            log.warning("request failed: %s: %s", exc.code, exc.message)
        return openai_error(status, exc.message, code=exc.code,
                            param=(exc.details or {}).get("param"), headers=headers)
    if isinstance(exc, StarletteHTTPException):
        return openai_error(exc.status_code, str(exc.detail), headers=exc.headers)
    log.exception("unexpected error (%s)", type(exc).__name__)
    return openai_error(500, "internal error; see the service logs", code="internal_error")


class OpenAIRoute(APIRoute):
    """Errors raised while handling (validation, the guard, the service) in OpenAI's shape;
    the app's other routes keep ragserve's."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # every error of these routes is answered in one shape
                return _from_exception(exc)
        return route


# --------------------------------------------------------------------------- request


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat request; unknown fields (sampling, tools, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(default=None, description="The served model (GET /v1/models).")
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    n: int = Field(default=1, description="Only 1 is supported.")
    # ragserve's extensions
    top_k: int | None = Field(default=None, description="Candidates from the retriever.")
    rerank_top_n: int | None = Field(default=None, description="Passages given to the generator.")
    filters: dict[str, Any] | None = Field(default=None, description="Metadata filters.")
    mode: RetrievalMode | None = Field(default=None, description="dense, sparse or hybrid.")
    return_passages: bool = Field(default=True, description="Include ``citations``.")
    session_id: str | None = Field(default=None, description="Also keep the turn in a session.")


def conversation(messages: list[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
    """The question (the last message, a user's) and the earlier (question, answer) turns."""
    if messages[-1].role != "user":
        raise InvalidRequestError("the last message must be the user's question",
                                  details={"param": "messages"})
    question = messages[-1].text()
    history: list[tuple[str, str]] = []
    for m in messages[:-1]:
        if m.role == "user":
            history.append((m.text(), ""))
        elif m.role == "assistant" and history and not history[-1][1]:
            history[-1] = (history[-1][0], m.text())
    return question, [(q, a) for q, a in history if q.strip()]


def to_query(req: ChatCompletionRequest, question: str) -> QueryRequest:
    if req.n != 1:
        raise InvalidRequestError("only n=1 is supported", details={"param": "n"})
    fields: dict[str, Any] = {
        "query": question, "top_k": req.top_k, "rerank_top_n": req.rerank_top_n,
        "filters": req.filters, "mode": req.mode, "session_id": req.session_id,
        "max_tokens": req.max_completion_tokens or req.max_tokens,
    }
    try:
        return QueryRequest.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        errors = exc.errors()
        param = ".".join(str(p) for p in errors[0].get("loc", ())) if errors else None
        raise InvalidRequestError(validation_message(errors),
                                  details={"param": "messages" if param == "query" else param}
                                  ) from None


# --------------------------------------------------------------------------- responses


def _extension(data: dict) -> dict:
    keep = ("timings", "backends", "cache", "degraded", "warnings", "generation", "route",
            "cited")
    return {k: data[k] for k in keep if k in data}


def _usage(usage: dict | None) -> dict:
    u = usage or {}
    prompt, completion = int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _no_answer(data: dict) -> StageUnavailableError:
    why = "; ".join(data.get("warnings") or []) or "the generator gave no answer"
    return StageUnavailableError(why, details={"stage": "generator"})


def openai_router(service: Callable[[], RagService], admitted: Callable[[str], Any], *,
                  model: str) -> APIRouter:
    """The routes; ``admitted(operation)`` is the app's guard dependency, ``model`` the name
    served."""
    router = APIRouter(route_class=OpenAIRoute, tags=["openai"])
    created = int(time.time())
    model_card = {"id": model, "object": "model", "created": created, "owned_by": "ragserve"}

    def check_model(name: str | None) -> None:
        if name is not None and name != model:
            exc = NotFoundError(f"The model '{name}' does not exist; this service serves "
                                f"'{model}' (GET /v1/models)", details={"param": "model"})
            exc.code = "model_not_found"  # OpenAI's code for this case
            raise exc

    @router.get("/v1/models", summary="The model served: this application (OpenAI-style).")
    async def models(_: RequestContext = admitted("query")) -> dict:
        return {"object": "list", "data": [model_card]}

    @router.get("/v1/models/{name:path}", summary="One model (OpenAI-style).")
    async def get_model(name: str, _: RequestContext = admitted("query")) -> dict:
        check_model(name)
        return model_card

    @router.post("/v1/chat/completions",
                 summary="Answer the conversation's last question from the indexed documents "
                         "(OpenAI chat completions; citations in the `citations` field).")
    async def chat_completions(req: ChatCompletionRequest,
                               ctx: RequestContext = admitted("query")) -> Response:
        check_model(req.model)
        question, history = conversation(req.messages)
        query = to_query(req, question)
        completion_id = f"chatcmpl-{ctx.request_id}"
        now = int(time.time())
        if not req.stream:
            resp = await service().query(query, history=history)
            data = resp.model_dump(mode="json")
            if not resp.answer and resp.degraded:
                raise _no_answer(data)
            body: dict[str, Any] = {
                "id": completion_id, "object": "chat.completion", "created": now,
                "model": model, "system_fingerprint": None,
                "choices": [{"index": 0, "logprobs": None,
                             "finish_reason": resp.finish_reason or "stop",
                             "message": {"role": "assistant",
                                         "content": resp.answer + sources_text(
                                             data["citations"],
                                             [c.number for c in resp.citations if c.cited]),
                                         "refusal": None}}],
                "usage": _usage(data["usage"]),
                "ragserve": {**_extension(data),
                             "cited": [c.number for c in resp.citations if c.cited]},
            }
            if req.return_passages:
                body["citations"] = data["citations"]
            return JSONResponse(body)

        events = service().query_events(query, history=history)
        # The first event comes after validation and ranking: errors until then are statuses.
        first = await events.__anext__()
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(
            _chunks(first, events, completion_id=completion_id, created=now, model=model,
                    include_usage=include_usage, return_passages=req.return_passages),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return router


def sources_text(citations: list[dict], cited: list[int]) -> str:
    """Numbered sources appended to the answer's text, since OpenAI clients show only the text:
    the passages the answer cites with ``[n]``, or, when it cites none, every passage it was
    given, labelled as such (never presented as cited)."""
    if not citations:
        return ""
    marks = set(cited)
    shown = [c for c in citations if c["number"] in marks] or citations
    label = "Sources" if marks else "Passages given (the answer cites none of them)"
    lines = [f"[{c['number']}] {(c.get('metadata') or {}).get('source') or c['doc_id']}"
             for c in shown]
    return f"\n\n{label}:\n" + "\n".join(lines)


def _data(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'), default=str)}\n\n".encode()


async def _chunks(first: tuple[str, dict], events: AsyncIterator[tuple[str, dict]], *,
                  completion_id: str, created: int, model: str, include_usage: bool,
                  return_passages: bool) -> AsyncIterator[bytes]:
    def chunk(delta: dict, finish_reason: str | None = None, **extra: Any) -> bytes:
        payload: dict[str, Any] = {
            "id": completion_id, "object": "chat.completion.chunk", "created": created,
            "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}], **extra}
        if include_usage:
            payload["usage"] = None
        return _data(payload)

    event, data = first
    passages = data.get("citations", []) if event == "meta" else []
    opening: dict[str, Any] = {}
    if return_passages:
        opening["citations"] = passages
    yield chunk({"role": "assistant", "content": ""}, **opening)
    try:
        streamed = False
        async for event, data in events:
            if event == "token" and data.get("delta"):
                streamed = True
                yield chunk({"content": data["delta"]})
            elif event == "done":
                if not data.get("answer") and data.get("degraded"):
                    raise _no_answer(data)
                if not streamed and data.get("answer"):  # a whole answer (no passages found)
                    yield chunk({"content": data["answer"]})
                given = data.get("citations")  # the passages the generator was given
                footer = sources_text(given if given is not None else
                                      passages[: data.get("passages_used", len(passages))],
                                      data.get("cited", []))
                if footer and data.get("answer"):
                    yield chunk({"content": footer})
                yield chunk({}, data.get("finish_reason") or "stop", ragserve=_extension(data))
                if include_usage:
                    yield _data({"id": completion_id, "object": "chat.completion.chunk",
                                 "created": created, "model": model, "system_fingerprint": None,
                                 "choices": [], "usage": _usage(data.get("usage"))})
    except RagServeError as exc:  # the status is sent: say it in-band, OpenAI's way
        status = 400 if exc.status_code == 422 else exc.status_code
        yield _data({"error": {"message": exc.message,
                               "type": _ERROR_TYPES.get(status, "server_error"),
                               "param": None, "code": exc.code}})
    yield b"data: [DONE]\n\n"
