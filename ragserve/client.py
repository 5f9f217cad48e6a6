"""Typed HTTP clients for a running ragserve service: ``RagServeClient`` and its async twin.

Both speak the API of ``ragserve.api`` and return its response models::

    from ragserve.client import RagServeClient

    with RagServeClient("http://127.0.0.1:8000", api_key="...") as client:
        client.ingest([{"id": "guide.md", "text": "Chunks are sized by content type."}])
        answer = client.query("How are chunks sized?", rerank_top_n=3)
        print(answer.answer, [c.doc_id for c in answer.citations])

Contracts shared by both clients:

- Request bodies are built by validating with the request models (``SearchRequest``,
  ``QueryRequest``, ``EmbeddingsRequest``, ``IngestRequest``), so a bad option raises pydantic's
  ``ValidationError`` before anything is sent. An option given as ``None`` is left out, which
  leaves it to the server's default.
- Retries: every ragserve route is idempotent (ingestion replaces by id), so every call is
  retried, at most ``max_attempts`` tries in all, on connection errors, timeouts, 429 and 503,
  and on a 500 that is not ragserve's error body (Serve's proxy lost the replica mid-request).
  The delay doubles from ``backoff_s`` with jitter, or follows ``Retry-After`` (capped at 30 s).
  A stream is retried only until its first event has arrived.
- Constructor arguments: ``base_url`` (default http://127.0.0.1:8000); ``api_key``, sent as
  ``Authorization: Bearer <key>``; ``timeout_s`` per HTTP request (connecting: at most 10 s);
  ``max_attempts``, tries per call in all, 1 to 3; ``backoff_s``, the first retry delay;
  ``headers``, added to every request. Close with ``close()`` / ``aclose()`` or use the client
  as a (async) context manager.
- Every HTTP request carries ``X-Request-ID`` (a uuid4 hex, the same for the retries of one
  call, so the server's logs show them together) and, with ``api_key``, ``Authorization: Bearer``.
- Errors: an error answer ``{"error": {"code", "message", "details"}}`` raises the matching
  ``ragserve.errors`` type (422 ``InvalidRequestError``, 404 ``NotFoundError``, 413
  ``PayloadTooLargeError``, 503 ``StageTimeoutError`` for ``stage_timeout``, else
  ``StageUnavailableError``); any other status raises ``ServiceError``. No answer at all, after
  the retries, raises ``ServiceUnreachableError``. Messages hold the server's message, never a
  request body or query text.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Generic, NamedTuple, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel
from typing_extensions import TypedDict, Unpack

from ragserve.errors import (
    InvalidRequestError,
    ModelNotReadyError,
    NotFoundError,
    PayloadTooLargeError,
    RagServeError,
    StageTimeoutError,
    StageUnavailableError,
)
from ragserve.schemas import (
    DeleteResponse,
    DocumentChunks,
    DocumentIn,
    EmbeddingsRequest,
    EmbeddingsResponse,
    IngestRequest,
    IngestResponse,
    QueryRequest,
    QueryResponse,
    RerankRequest,
    RerankResponse,
    SearchRequest,
    SearchResponse,
)

__all__ = [
    "DEFAULT_URL",
    "MAX_ATTEMPTS",
    "MAX_RETRY_AFTER_S",
    "RagServeClient",
    "AsyncRagServeClient",
    "SearchOptions",
    "QueryOptions",
    "ServerSentEvent",
    "ServiceError",
    "ServiceUnreachableError",
    "retry_delay",
]

DEFAULT_URL = "http://127.0.0.1:8000"
MAX_ATTEMPTS = 3
MAX_RETRY_AFTER_S = 30.0
RETRY_STATUSES = frozenset({429, 503})
# A network fault may clear on the next try; a malformed URL or a refused TLS setup will not.
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

log = logging.getLogger("ragserve.client")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

# Module-level so that tests can observe the delays without waiting them out.
_sleep = time.sleep
_asleep = asyncio.sleep


# --------------------------------------------------------------------------- public types


class ServiceError(RagServeError):
    """An error answer that no ``ragserve.errors`` type stands for (e.g. 401, 429, 500).

    ``status_code`` is the HTTP status and ``code`` the server's ``error.code``.
    """

    def __init__(
        self, message: str, *, status_code: int, code: str = "http_error", details: Any = None
    ) -> None:
        super().__init__(message, details=details)
        self.status_code = status_code
        self.code = code

    def __reduce__(self) -> Any:
        return (_rebuild_service_error, (self.message, self.status_code, self.code, self.details))


def _rebuild_service_error(message: str, status: int, code: str, details: Any) -> ServiceError:
    return ServiceError(message, status_code=status, code=code, details=details)


class ServiceUnreachableError(StageUnavailableError):
    """No HTTP answer from ``url`` after the retries: refused, reset, timed out, DNS failure.

    Also raised when a stream's connection breaks after its first event (not retried then).
    """

    code = "service_unreachable"

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the ragserve service at {url} ({reason})")
        self.url = url
        self.reason = reason

    def __reduce__(self) -> Any:
        return (type(self), (self.url, self.reason))


class ServerSentEvent(NamedTuple):
    """One event of ``query_stream``: ``meta``, ``token``, ``done`` or ``error``.

    ``data`` is the decoded JSON payload (the raw text when it is not JSON).
    """

    event: str
    data: Any


class SearchOptions(TypedDict, total=False):
    """Options of ``search`` (fields of ``SearchRequest``)."""

    top_k: int | None
    rerank_top_n: int | None
    filters: dict[str, Any] | None
    mode: str | None


class QueryOptions(SearchOptions, total=False):
    """Options of ``query`` and ``query_stream`` (fields of ``QueryRequest``)."""

    max_tokens: int | None
    session_id: str | None


# --------------------------------------------------------------------------- calls


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One API call, the same for both clients: what to send and how to read the answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    body: bytes | None = None
    # Statuses whose non-error body is the answer (``/readyz`` says "not ready" with a 503).
    answer_statuses: frozenset[int] = frozenset()


def _encode(payload: Any) -> bytes:
    # Compact UTF-8 JSON, as httpx's ``json=`` writes it: callers that size batches by bytes
    # (the CLI's ingest) can count on the same encoding.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _request_body(model: type[BaseModel], query: str, options: Mapping[str, Any],
                  **fixed: Any) -> bytes:
    if "stream" in options:
        raise TypeError("'stream' is not an option: call query_stream() for a streamed answer")
    given = {k: v for k, v in options.items() if v is not None}
    request = model.model_validate({"query": query, **given, **fixed})
    return _encode(request.model_dump(mode="json", exclude_unset=True))


def _validated(model: type[M]) -> Callable[[Any], M]:
    return model.model_validate


def _as_dict(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ValueError("expected a JSON object")
    return payload


def _document_path(doc_id: str) -> str:
    # Ids may hold '/', which the route accepts; '.' and '..' segments are escaped so that
    # URL normalisation cannot turn the id into another path.
    segments = [quote(s, safe=":@+") for s in doc_id.split("/")]
    segments = [s.replace(".", "%2E") if s in (".", "..") else s for s in segments]
    return "/v1/documents/" + "/".join(segments)


def _health() -> _Call[dict[str, Any]]:
    return _Call("GET", "/healthz", _as_dict)


def _ready() -> _Call[dict[str, Any]]:
    return _Call("GET", "/readyz", _as_dict, answer_statuses=frozenset({503}))


def _search(query: str, options: Mapping[str, Any]) -> _Call[SearchResponse]:
    body = _request_body(SearchRequest, query, options)
    return _Call("POST", "/v1/search", _validated(SearchResponse), body)


def _query(query: str, options: Mapping[str, Any], *, stream: bool) -> _Call[QueryResponse]:
    body = _request_body(QueryRequest, query, options, **({"stream": True} if stream else {}))
    return _Call("POST", "/v1/query", _validated(QueryResponse), body)


def _embeddings(input: str | list[str], input_type: str, model: str | None
                ) -> _Call[EmbeddingsResponse]:
    fields: dict[str, Any] = {"input": input, "input_type": input_type}
    if model is not None:
        fields["model"] = model
    request = EmbeddingsRequest.model_validate(fields)
    body = _encode(request.model_dump(mode="json", exclude_unset=True))
    return _Call("POST", "/v1/embeddings", _validated(EmbeddingsResponse), body)


def _chat(messages: list[Mapping[str, Any]], model: str | None, options: Mapping[str, Any],
          *, stream: bool) -> _Call[dict[str, Any]]:
    if "stream" in options:
        raise TypeError("'stream' is not an option: call chat_stream() for a streamed answer")
    body = {"messages": [dict(m) for m in messages],
            **{k: v for k, v in options.items() if v is not None}}
    if model is not None:
        body["model"] = model
    if stream:
        body["stream"] = True
    return _Call("POST", "/v1/chat/completions", _as_dict, _encode(body))


def _chunks(events: Iterable[ServerSentEvent]) -> Iterator[dict[str, Any]]:
    for event in events:
        if event.data == "[DONE]":
            return
        if _is_error_envelope(event.data):
            raise ServiceError(str(event.data["error"].get("message")), status_code=200,
                               code=str(event.data["error"].get("code") or "stream_error"))
        yield event.data


def _models() -> _Call[dict[str, Any]]:
    return _Call("GET", "/v1/models", _as_dict)


def _rerank(query: str, documents: list[Any], top_n: int | None, return_documents: bool
            ) -> _Call[RerankResponse]:
    fields: dict[str, Any] = {"query": query, "documents": list(documents),
                              "return_documents": return_documents}
    if top_n is not None:
        fields["top_n"] = top_n
    request = RerankRequest.model_validate(fields)
    body = _encode(request.model_dump(mode="json", exclude_unset=True))
    return _Call("POST", "/v1/rerank", _validated(RerankResponse), body)


def _ingest(documents: Iterable[DocumentIn | Mapping[str, Any]]) -> _Call[IngestResponse]:
    request = IngestRequest.model_validate({"documents": list(documents)})
    # `acl` only when a document has one: servers from before ACLs refuse the field.
    body = _encode({"documents": [d.model_dump(mode="json", exclude=None if d.acl else {"acl"})
                                  for d in request.documents]})
    return _Call("POST", "/v1/documents", _validated(IngestResponse), body)


def _get_document(doc_id: str) -> _Call[DocumentChunks]:
    return _Call("GET", _document_path(doc_id), _validated(DocumentChunks))


def _delete_document(doc_id: str) -> _Call[DeleteResponse]:
    return _Call("DELETE", _document_path(doc_id), _validated(DeleteResponse))


# --------------------------------------------------------------------------- answers and errors


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _is_error_envelope(payload: Any) -> bool:
    return isinstance(payload, dict) and isinstance(payload.get("error"), dict)


def _retryable(response: httpx.Response) -> bool:
    """429 and 503; and a 500 that is not ragserve's own error answer: Serve's proxy answers
    500 when the replica serving a request died under it (a lost replica, not a bug here), and
    every route is idempotent."""
    if response.status_code in RETRY_STATUSES:
        return True
    return response.status_code == 500 and not _is_error_envelope(_json_body(response))


def _accepted(call: _Call[Any], response: httpx.Response) -> bool:
    if response.status_code < 400:
        return True
    return (response.status_code in call.answer_statuses
            and not _is_error_envelope(_json_body(response)))


def _answer(call: _Call[T], response: httpx.Response) -> T:
    """The parsed answer, or the typed error the response stands for."""
    if not _accepted(call, response):
        raise _error_from(response)
    payload = _json_body(response)
    try:
        return call.parse(payload)
    except ValueError as exc:  # pydantic's ValidationError included
        # Say what did not match, not the values: answers can hold document text.
        raise ServiceError(
            f"unexpected answer from {call.method} {call.path} ({type(exc).__name__})",
            status_code=response.status_code, code="invalid_response",
        ) from None


_BY_STATUS: dict[int, type[RagServeError]] = {
    422: InvalidRequestError, 404: NotFoundError, 413: PayloadTooLargeError,
}
_BY_503_CODE: dict[str, type[StageUnavailableError]] = {
    "stage_timeout": StageTimeoutError, "model_not_ready": ModelNotReadyError,
}


def _error_from(response: httpx.Response) -> RagServeError:
    status = response.status_code
    code, message, details = "http_error", f"HTTP {status}", None
    try:
        payload, text = response.json(), ""
    except ValueError:  # e.g. a proxy's HTML page
        payload, text = None, " ".join(response.text.split())[:200]
    if _is_error_envelope(payload):
        error = payload["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        details = error.get("details")
    elif isinstance(payload, dict) and "detail" in payload:  # a plain FastAPI/Starlette answer
        message = _detail_message(payload["detail"]) or message
    elif text:
        message = f"HTTP {status}: {text}"
    if status == 503:
        error_type: type[RagServeError] = _BY_503_CODE.get(code, StageUnavailableError)
    else:
        error_type = _BY_STATUS.get(status, ServiceError)
    if error_type is ServiceError:
        return ServiceError(message, status_code=status, code=code, details=details)
    exc = error_type(message, details=details)
    if code != "http_error":
        exc.code = code
    return exc


def _detail_message(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # validation errors: keep where and what, never the input
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {item.get('msg', 'invalid')}" if loc
                             else str(item.get("msg", "invalid")))
        return "; ".join(parts)
    return ""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def retry_delay(attempt: int, backoff_s: float, retry_after: float | None = None) -> float:
    """Seconds to wait before try ``attempt + 1``: ``Retry-After`` when the server sent one,
    else ``backoff_s * 2**(attempt - 1)`` with jitter (half to all of it); at most 30 s."""
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER_S)
    return min(backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0), MAX_RETRY_AFTER_S)


def _describe(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed: {text}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out: {text}"
    return text


class _SseDecoder:
    """Turns the lines of a ``text/event-stream`` into events, one line at a time."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self.flush()
        if line.startswith(":"):  # a comment: the server's keep-alive
            return None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        return None

    def flush(self) -> ServerSentEvent | None:
        event, data = self._event, self._data
        self._event, self._data = "message", []
        if not data:
            return None
        text = "\n".join(data)
        try:
            return ServerSentEvent(event, json.loads(text))
        except ValueError:
            return ServerSentEvent(event, text)


# --------------------------------------------------------------------------- shared core


class _ClientCore:
    """Settings, headers and retry decisions shared by the sync and the async client."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout_s: float,
        max_attempts: int,
        backoff_s: float,
        headers: Mapping[str, str] | None,
    ) -> None:
        if not 1 <= max_attempts <= MAX_ATTEMPTS:
            raise ValueError(f"max_attempts must be 1 to {MAX_ATTEMPTS}")
        if timeout_s <= 0 or backoff_s < 0:
            raise ValueError("timeout_s must be positive and backoff_s not negative")
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._headers = {"User-Agent": "ragserve-client", "Accept": "application/json",
                         **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    @staticmethod
    def _request_headers(call: _Call[Any], request_id: str, *, stream: bool = False
                         ) -> dict[str, str]:
        headers = {"X-Request-ID": request_id}
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        if stream:
            headers["Accept"] = "text/event-stream"
        return headers

    def _after_transport_error(self, call: _Call[Any], exc: httpx.TransportError, attempt: int,
                               *, started: bool = False) -> float:
        """The delay before the next try, or raises ServiceUnreachableError."""
        if started:
            raise ServiceUnreachableError(
                self.base_url, f"the connection broke during the stream: {_describe(exc)}"
            ) from exc
        if not isinstance(exc, _TRANSIENT) or attempt >= self.max_attempts:
            raise ServiceUnreachableError(self.base_url, _describe(exc)) from exc
        delay = retry_delay(attempt, self.backoff_s)
        log.info("%s %s: %s; try %d of %d in %.2f s", call.method, call.path,
                 type(exc).__name__, attempt + 1, self.max_attempts, delay)
        return delay

    def _after_response(self, call: _Call[Any], response: httpx.Response, attempt: int
                        ) -> float | None:
        """The delay before the next try, or None when this response is final."""
        if (not _retryable(response) or attempt >= self.max_attempts
                or _accepted(call, response)):
            return None
        delay = retry_delay(attempt, self.backoff_s, _retry_after(response))
        log.info("%s %s: HTTP %d; try %d of %d in %.2f s", call.method, call.path,
                 response.status_code, attempt + 1, self.max_attempts, delay)
        return delay


class RagServeClient(_ClientCore):
    """Synchronous client (``httpx.Client``); see the module docstring for the contracts.

    Health::

        client = RagServeClient("http://127.0.0.1:8000")
        client.health()            # {"status": "ok"}
        client.ready()["ready"]    # False while a stage loads (the 503 body is returned)

    Retrieval and answers::

        hits = client.search("chunk size", top_k=50, rerank_top_n=5, filters={"lang": "en"})
        answer = client.query("How are chunks sized?", max_tokens=256, session_id="s1")
        for event, data in client.query_stream("How are chunks sized?"):
            if event == "token":
                print(data["delta"], end="")

    Embeddings and documents::

        vectors = client.embeddings(["a text", "another"], input_type="passage")
        client.ingest([DocumentIn(id="a.md", text="..."), {"id": "b.md", "text": "..."}])
        client.get_document("a.md").chunks
        client.delete_document("a.md").deleted_chunks
        client.close()             # or use ``with RagServeClient(...) as client:``
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_s: float = 0.5,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout_s, max_attempts, backoff_s, headers)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers,
                                  timeout=self._timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RagServeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: the ingress answers."""
        return self._call(_health())

    def ready(self) -> dict[str, Any]:
        """``GET /readyz``: ``{"ready": bool, "stages": {...}}``, also when not ready (503)."""
        return self._call(_ready())

    def search(self, query: str, **options: Unpack[SearchOptions]) -> SearchResponse:
        """``POST /v1/search``: retrieved and reranked passages, no generation."""
        return self._call(_search(query, options))

    def query(self, query: str, **options: Unpack[QueryOptions]) -> QueryResponse:
        """``POST /v1/query``: an answer with its citations."""
        return self._call(_query(query, options, stream=False))

    def query_stream(self, query: str, **options: Unpack[QueryOptions]
                     ) -> Iterator[ServerSentEvent]:
        """``POST /v1/query`` with ``stream``: the events as they arrive.

        Options are validated now; the request is sent when iteration starts. An ``error``
        event is yielded like any other; a connection that breaks after the first event raises
        ``ServiceUnreachableError``.
        """
        return self._stream(_query(query, options, stream=True))

    def embeddings(self, input: str | list[str], input_type: str = "passage",
                   model: str | None = None) -> EmbeddingsResponse:
        """``POST /v1/embeddings``: the service's embedder for any text (OpenAI-style)."""
        return self._call(_embeddings(input, input_type, model))

    def ingest(self, documents: Iterable[DocumentIn | Mapping[str, Any]]) -> IngestResponse:
        """``POST /v1/documents``: add or replace documents by id."""
        return self._call(_ingest(documents))

    def chat(self, messages: list[Mapping[str, Any]], *, model: str | None = None,
             **options: Any) -> dict[str, Any]:
        """``POST /v1/chat/completions``: OpenAI's chat completion as a dict; the answer is
        ``["choices"][0]["message"]["content"]``, its passages ``["citations"]``. Options are
        the route's fields (``top_k``, ``rerank_top_n``, ``filters``, ``mode``,
        ``max_tokens``, ``return_passages``)::

            res = client.chat([{"role": "user", "content": "How are chunks sized?"}],
                              rerank_top_n=3)
        """
        return self._call(_chat(messages, model, options, stream=False))

    def chat_stream(self, messages: list[Mapping[str, Any]], *, model: str | None = None,
                    **options: Any) -> Iterator[dict[str, Any]]:
        """``POST /v1/chat/completions`` streamed: each ``chat.completion.chunk`` as a dict,
        until ``[DONE]``; an in-band error raises ``ServiceError``."""
        return _chunks(self._stream(_chat(messages, model, options, stream=True)))

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``: ``{"data": [{"id": <the app's name>, ...}]}``."""
        return self._call(_models())

    def rerank(self, query: str, documents: list[str | Mapping[str, Any]], *,
               top_n: int | None = None, return_documents: bool = False) -> RerankResponse:
        """``POST /v1/rerank``: the reranker stage over ``documents``, best first
        (``results[i].index`` points into ``documents``)."""
        return self._call(_rerank(query, documents, top_n, return_documents))

    def get_document(self, doc_id: str) -> DocumentChunks:
        """``GET /v1/documents/{doc_id}``: a document's chunks (``NotFoundError`` if none)."""
        return self._call(_get_document(doc_id))

    def delete_document(self, doc_id: str) -> DeleteResponse:
        """``DELETE /v1/documents/{doc_id}``."""
        return self._call(_delete_document(doc_id))

    def _call(self, call: _Call[T]) -> T:
        request_id = uuid.uuid4().hex
        attempt = 1
        while True:
            try:
                response = self._http.request(
                    call.method, call.path, content=call.body,
                    headers=self._request_headers(call, request_id),
                )
            except httpx.TransportError as exc:
                delay = self._after_transport_error(call, exc, attempt)
            else:
                retry = self._after_response(call, response, attempt)
                if retry is None:
                    return _answer(call, response)
                delay = retry
            _sleep(delay)
            attempt += 1

    def _stream(self, call: _Call[Any]) -> Iterator[ServerSentEvent]:
        request_id = uuid.uuid4().hex
        headers = self._request_headers(call, request_id, stream=True)
        attempt = 1
        while True:
            started = False
            try:
                with self._http.stream(call.method, call.path, content=call.body,
                                       headers=headers) as response:
                    if response.status_code >= 400:
                        response.read()
                        delay = self._after_response(call, response, attempt)
                        if delay is None:
                            raise _error_from(response)
                    else:
                        decoder = _SseDecoder()
                        for line in response.iter_lines():
                            if (event := decoder.feed(line)) is not None:
                                started = True
                                yield event
                        if (event := decoder.flush()) is not None:
                            yield event
                        return
            except httpx.TransportError as exc:
                delay = self._after_transport_error(call, exc, attempt, started=started)
            _sleep(delay)
            attempt += 1


class AsyncRagServeClient(_ClientCore):
    """Asynchronous client (``httpx.AsyncClient``) with the methods of ``RagServeClient``.

    Health::

        async with AsyncRagServeClient("http://127.0.0.1:8000") as client:
            await client.health()
            (await client.ready())["ready"]

    Retrieval and answers::

            hits = await client.search("chunk size", top_k=50, rerank_top_n=5)
            answer = await client.query("How are chunks sized?", max_tokens=256)
            async for event, data in client.query_stream("How are chunks sized?"):
                if event == "token":
                    print(data["delta"], end="")

    Embeddings and documents::

            await client.embeddings("a query", input_type="query")
            await client.ingest([{"id": "a.md", "text": "..."}])
            (await client.get_document("a.md")).chunks
            await client.delete_document("a.md")

    Leaving a ``query_stream`` loop early: wrap it in ``contextlib.aclosing`` so that the
    connection is released at once rather than when the generator is collected.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_s: float = 0.5,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout_s, max_attempts, backoff_s, headers)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers,
                                       timeout=self._timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRagServeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def health(self) -> dict[str, Any]:
        """``GET /healthz``: the ingress answers."""
        return await self._call(_health())

    async def ready(self) -> dict[str, Any]:
        """``GET /readyz``: ``{"ready": bool, "stages": {...}}``, also when not ready (503)."""
        return await self._call(_ready())

    async def search(self, query: str, **options: Unpack[SearchOptions]) -> SearchResponse:
        """``POST /v1/search``: retrieved and reranked passages, no generation."""
        return await self._call(_search(query, options))

    async def query(self, query: str, **options: Unpack[QueryOptions]) -> QueryResponse:
        """``POST /v1/query``: an answer with its citations."""
        return await self._call(_query(query, options, stream=False))

    def query_stream(self, query: str, **options: Unpack[QueryOptions]
                     ) -> AsyncIterator[ServerSentEvent]:
        """``POST /v1/query`` with ``stream``: the events as they arrive (``async for``).

        Options are validated now; the request is sent when iteration starts. An ``error``
        event is yielded like any other; a connection that breaks after the first event raises
        ``ServiceUnreachableError``.
        """
        return self._stream(_query(query, options, stream=True))

    async def embeddings(self, input: str | list[str], input_type: str = "passage",
                         model: str | None = None) -> EmbeddingsResponse:
        """``POST /v1/embeddings``: the service's embedder for any text (OpenAI-style)."""
        return await self._call(_embeddings(input, input_type, model))

    async def ingest(self, documents: Iterable[DocumentIn | Mapping[str, Any]]
                     ) -> IngestResponse:
        """``POST /v1/documents``: add or replace documents by id."""
        return await self._call(_ingest(documents))

    async def chat(self, messages: list[Mapping[str, Any]], *, model: str | None = None,
                   **options: Any) -> dict[str, Any]:
        """``POST /v1/chat/completions`` (see ``RagServeClient.chat``)."""
        return await self._call(_chat(messages, model, options, stream=False))

    async def chat_stream(self, messages: list[Mapping[str, Any]], *,
                          model: str | None = None, **options: Any
                          ) -> AsyncIterator[dict[str, Any]]:
        """``POST /v1/chat/completions`` streamed: each chunk as a dict, until ``[DONE]``."""
        async for event in self._stream(_chat(messages, model, options, stream=True)):
            if event.data == "[DONE]":
                return
            for chunk in _chunks([event]):
                yield chunk

    async def models(self) -> dict[str, Any]:
        """``GET /v1/models``."""
        return await self._call(_models())

    async def rerank(self, query: str, documents: list[str | Mapping[str, Any]], *,
                     top_n: int | None = None, return_documents: bool = False
                     ) -> RerankResponse:
        """``POST /v1/rerank`` (see ``RagServeClient.rerank``)."""
        return await self._call(_rerank(query, documents, top_n, return_documents))

    async def get_document(self, doc_id: str) -> DocumentChunks:
        """``GET /v1/documents/{doc_id}``: a document's chunks (``NotFoundError`` if none)."""
        return await self._call(_get_document(doc_id))

    async def delete_document(self, doc_id: str) -> DeleteResponse:
        """``DELETE /v1/documents/{doc_id}``."""
        return await self._call(_delete_document(doc_id))

    async def _call(self, call: _Call[T]) -> T:
        request_id = uuid.uuid4().hex
        attempt = 1
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, content=call.body,
                    headers=self._request_headers(call, request_id),
                )
            except httpx.TransportError as exc:
                delay = self._after_transport_error(call, exc, attempt)
            else:
                retry = self._after_response(call, response, attempt)
                if retry is None:
                    return _answer(call, response)
                delay = retry
            await _asleep(delay)
            attempt += 1

    async def _stream(self, call: _Call[Any]) -> AsyncIterator[ServerSentEvent]:
        request_id = uuid.uuid4().hex
        headers = self._request_headers(call, request_id, stream=True)
        attempt = 1
        while True:
            started = False
            try:
                async with self._http.stream(call.method, call.path, content=call.body,
                                             headers=headers) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        delay = self._after_response(call, response, attempt)
                        if delay is None:
                            raise _error_from(response)
                    else:
                        decoder = _SseDecoder()
                        async for line in response.aiter_lines():
                            if (event := decoder.feed(line)) is not None:
                                started = True
                                yield event
                        if (event := decoder.flush()) is not None:
                            yield event
                        return
            except httpx.TransportError as exc:
                delay = self._after_transport_error(call, exc, attempt, started=started)
            await _asleep(delay)
            attempt += 1
