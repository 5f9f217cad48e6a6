"""``ragserve.client`` against a real HTTP server on a loopback port.

The server is FastAPI under uvicorn in a background thread. Each test scripts what it answers
(error bodies, ``Retry-After``, event streams that break) and reads back what arrived: paths,
bodies and headers.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import pickle
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import ValidationError

import ragserve.client as client_module
from scripts.local_ray import free_port
from ragserve.client import (
    AsyncRagServeClient,
    RagServeClient,
    ServerSentEvent,
    ServiceError,
    ServiceUnreachableError,
    retry_delay,
)
from ragserve.errors import (
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    StageTimeoutError,
    StageUnavailableError,
)
from ragserve.schemas import DocumentIn, QueryResponse, SearchResponse

CITATION = {"number": 1, "doc_id": "docs/a.md", "chunk_id": "c1", "text": "Chunks are sized.",
            "score": 0.75, "metadata": {"source": "docs/a.md"}}
TIMINGS = {"embed_ms": 1.0, "retrieve_ms": 2.0, "rerank_ms": 3.0, "generate_ms": 4.0,
           "total_ms": 10.0}
SEARCH_OK = {"results": [CITATION], "timings": TIMINGS, "backends": {"embedder": "minilm"}}
QUERY_OK = {"answer": "Chunks are sized [1].", "citations": [{**CITATION, "cited": True}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            "timings": TIMINGS, "backends": {"generator": "extractive"}}
EVENTS = [("meta", {"citations": [CITATION]}), ("token", {"delta": "Chunks "}),
          ("token", {"delta": "are sized."}), ("done", {"cited": [1]})]


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


@dataclass
class Scripted:
    """One scripted answer: JSON with a status, or an event stream (``break_after`` events,
    then the connection drops; None: the stream ends normally)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = False
    break_after: int | None = None


class Server:
    """What the test server received, and the answers scripted per path."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.reset()

    def reset(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: dict[str, list[Scripted]] = defaultdict(list)

    def answer(self, path: str, *answers: Scripted) -> None:
        self.script[path].extend(answers)

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]


def build_app(server: Server) -> FastAPI:
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST", "DELETE"])
    async def everything(request: Request, path: str) -> Response:
        raw = await request.body()
        body = json.loads(raw) if raw else None
        server.requests.append({
            "method": request.method, "path": request.url.path, "body": body,
            "headers": dict(request.headers), "at": time.monotonic(),
        })
        queue = server.script[request.url.path]
        scripted = queue.pop(0) if queue else None
        if scripted is not None and isinstance(scripted.body, str):
            return PlainTextResponse(scripted.body, status_code=scripted.status)
        if scripted is not None and not scripted.stream:
            return JSONResponse(scripted.body, status_code=scripted.status,
                                headers=scripted.headers)
        if scripted is not None or (body or {}).get("stream"):
            return StreamingResponse(_events(scripted.break_after if scripted else None),
                                     media_type="text/event-stream")
        return JSONResponse(_success(request.method, request.url.path, body))

    return app


def _success(method: str, path: str, body: Any) -> Any:
    if path == "/healthz":
        return {"status": "ok"}
    if path == "/readyz":
        return {"ready": True, "stages": {"embedder": "ok"}}
    if path == "/v1/search":
        return SEARCH_OK
    if path == "/v1/query":
        return QUERY_OK
    if path == "/v1/embeddings":
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        return {"data": [{"index": i, "embedding": [0.5, 0.5]} for i in range(len(texts))],
                "model": "minilm"}
    if path == "/v1/documents":
        documents = body["documents"]
        return {"documents": [{"id": d["id"], "status": "created", "chunks": 1}
                              for d in documents], "chunks_embedded": len(documents)}
    doc_id = path.removeprefix("/v1/documents/")
    if method == "DELETE":
        return {"id": doc_id, "deleted_chunks": 2}
    return {"id": doc_id, "content_type": "general", "metadata": {}, "doc_hash": "h",
            "chunks": [{"chunk_id": "c1", "doc_id": doc_id, "chunk_index": 0, "text": "t"}]}


async def _events(break_after: int | None):
    yield ": keep-alive\n\n"
    for number, (name, data) in enumerate(EVENTS):
        if number == break_after:
            raise ConnectionAbortedError("scripted: the connection drops")
        yield f"event: {name}\ndata: {json.dumps(data)}\n\n"
        await asyncio.sleep(0)


@pytest.fixture(scope="module")
def live() -> Iterator[Server]:
    port = free_port()
    server = Server(f"http://127.0.0.1:{port}")
    uv = uvicorn.Server(uvicorn.Config(build_app(server), host="127.0.0.1", port=port,
                                       log_level="critical", lifespan="off"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    yield server
    uv.should_exit = True
    thread.join(timeout=5)


@pytest.fixture()
def srv(live: Server) -> Server:
    live.reset()
    return live


@pytest.fixture()
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The retry delays the clients ask for, without waiting them out."""
    delays: list[float] = []

    async def asleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(client_module, "_sleep", delays.append)
    monkeypatch.setattr(client_module, "_asleep", asleep)
    return delays


def _request_id(call: dict[str, Any]) -> str:
    value = call["headers"]["x-request-id"]
    assert len(value) == 32 and int(value, 16) >= 0
    return value


# --------------------------------------------------------------------------- requests


def test_every_method_sends_validated_bodies_with_auth_and_request_ids(srv: Server) -> None:
    with RagServeClient(srv.url + "/", api_key="k-1", headers={"X-Tenant": "t1"}) as client:
        assert client.health() == {"status": "ok"}
        assert client.ready()["ready"] is True
        hits = client.search("chunk size", top_k=7, filters={"lang": "en"}, mode=None)
        answer = client.query("How?", max_tokens=9, session_id="s-1")
        vectors = client.embeddings(["a", "b"], input_type="query")
        ingested = client.ingest([DocumentIn(id="a.md", text="A."),
                                  {"id": "b.md", "text": "B.", "metadata": {"k": 1}}])
        chunks = client.get_document("docs/a.md")
        deleted = client.delete_document("docs/a.md")
    assert isinstance(hits, SearchResponse) and hits.results[0].doc_id == "docs/a.md"
    assert isinstance(answer, QueryResponse) and answer.citations[0].cited is True
    assert [len(v.embedding) for v in vectors.data] == [2, 2] and vectors.model == "minilm"
    assert [d.status for d in ingested.documents] == ["created", "created"]
    assert chunks.id == "docs/a.md" and chunks.chunks[0].text == "t"
    assert deleted.deleted_chunks == 2

    # bodies hold what was given (None left to the server), in the request models' shape
    assert srv.calls("/v1/search")[0]["body"] == {
        "query": "chunk size", "top_k": 7, "filters": {"lang": "en"}}
    assert srv.calls("/v1/query")[0]["body"] == {"query": "How?", "max_tokens": 9,
                                                 "session_id": "s-1"}
    assert srv.calls("/v1/embeddings")[0]["body"] == {"input": ["a", "b"], "input_type": "query"}
    assert srv.calls("/v1/documents")[0]["body"]["documents"] == [
        {"id": "a.md", "text": "A.", "metadata": {}, "content_type": "general"},
        {"id": "b.md", "text": "B.", "metadata": {"k": 1}, "content_type": "general"},
    ]
    assert [(c["method"], c["path"]) for c in srv.calls("/v1/documents/docs/a.md")] == [
        ("GET", "/v1/documents/docs/a.md"), ("DELETE", "/v1/documents/docs/a.md")]

    assert len(srv.requests) == 8
    assert all(c["headers"]["authorization"] == "Bearer k-1" for c in srv.requests)
    assert all(c["headers"]["x-tenant"] == "t1" for c in srv.requests)
    assert len({_request_id(c) for c in srv.requests}) == 8  # one id per call


def test_bad_options_fail_before_anything_is_sent(srv: Server) -> None:
    with RagServeClient(srv.url) as client:
        with pytest.raises(ValidationError, match="top_k"):
            client.search("q", top_k=0)
        with pytest.raises(ValidationError, match="topk"):
            client.query("q", topk=5)  # type: ignore[call-arg]
        with pytest.raises(ValidationError, match="query must not be blank"):
            client.query("   ")
        with pytest.raises(ValidationError, match="filter"):
            client.search("q", filters={"bad key": 1})
        with pytest.raises(ValidationError):
            client.ingest([{"id": "a.md", "text": ""}])
        with pytest.raises(TypeError, match="query_stream"):
            client.query("q", stream=True)  # type: ignore[call-arg]
        client.query_stream("q", mode="dense")  # validated, not sent until iterated
        with pytest.raises(ValidationError, match="mode"):
            client.query_stream("q", mode="fuzzy")  # type: ignore[arg-type]
    assert srv.requests == []


def test_no_api_key_means_no_authorization_header(srv: Server) -> None:
    with RagServeClient(srv.url) as client:
        client.health()
    assert "authorization" not in srv.requests[0]["headers"]


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RagServeClient(max_attempts=4)
    with pytest.raises(ValueError, match="max_attempts"):
        AsyncRagServeClient(max_attempts=0)


# --------------------------------------------------------------------------- retries


def test_503_with_retry_after_is_retried_after_that_delay(srv: Server) -> None:
    srv.answer("/v1/search", Scripted(503, error_body("stage_unavailable", "busy"),
                                      {"Retry-After": "1"}))
    with RagServeClient(srv.url, backoff_s=0) as client:
        assert client.search("q").results[0].score == 0.75
    first, second = srv.calls("/v1/search")
    assert second["at"] - first["at"] >= 0.9  # waited as told, not the zero backoff
    assert _request_id(first) == _request_id(second)  # one call, one id in the server's logs


async def test_async_503_with_retry_after_is_retried_after_that_delay(srv: Server) -> None:
    srv.answer("/v1/query", Scripted(503, error_body("stage_unavailable", "busy"),
                                     {"Retry-After": "1"}))
    async with AsyncRagServeClient(srv.url, backoff_s=0) as client:
        assert (await client.query("q")).answer == "Chunks are sized [1]."
    first, second = srv.calls("/v1/query")
    assert second["at"] - first["at"] >= 0.9
    assert _request_id(first) == _request_id(second)


def _far_retry_afters() -> list[Scripted]:
    later = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(hours=2),
                                        usegmt=True)
    return [Scripted(503, error_body("stage_unavailable", "busy"), {"Retry-After": "3600"}),
            Scripted(429, error_body("rate_limited", "slow down"), {"Retry-After": later})]


def test_retry_after_is_capped_at_30_s(srv: Server, sleeps: list[float]) -> None:
    srv.answer("/v1/search", *_far_retry_afters())
    with RagServeClient(srv.url) as client:
        client.search("q")
    assert sleeps == [30.0, 30.0]
    assert len(srv.calls("/v1/search")) == 3


async def test_async_retry_after_is_capped_at_30_s(srv: Server, sleeps: list[float]) -> None:
    srv.answer("/v1/search", *_far_retry_afters())
    async with AsyncRagServeClient(srv.url) as client:
        await client.search("q")
    assert sleeps == [30.0, 30.0]


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    delays = [retry_delay(attempt, 1.0) for attempt in (1, 2, 3) for _ in range(50)]
    assert all(0.5 <= d <= 1.0 for d in delays[:50])
    assert all(1.0 <= d <= 2.0 for d in delays[50:100])
    assert len(set(delays)) > 100  # jittered
    assert retry_delay(10, 1.0) == 30.0 and retry_delay(1, 1.0, retry_after=0.0) == 0.0


def test_gives_up_after_max_attempts(srv: Server, sleeps: list[float]) -> None:
    srv.answer("/v1/search", *[Scripted(503, error_body("stage_timeout", "embedder slow"))] * 3)
    with RagServeClient(srv.url, backoff_s=0.2) as client:
        with pytest.raises(StageTimeoutError) as exc:
            client.search("q")
    assert exc.value.message == "embedder slow" and exc.value.status_code == 503
    assert len(srv.calls("/v1/search")) == 3 and len(sleeps) == 2
    assert 0.1 <= sleeps[0] <= 0.2 and 0.2 <= sleeps[1] <= 0.4  # doubling backoff

    srv.reset()
    srv.answer("/healthz", Scripted(429, error_body("rate_limited", "slow down")))
    with RagServeClient(srv.url, max_attempts=1) as client:
        with pytest.raises(ServiceError) as limited:
            client.health()
    assert (limited.value.status_code, limited.value.code) == (429, "rate_limited")
    assert len(srv.calls("/healthz")) == 1


def test_connection_refused_is_a_typed_error_after_max_attempts(sleeps: list[float]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with RagServeClient(url, backoff_s=0.1) as client:
        with pytest.raises(ServiceUnreachableError) as exc:
            client.health()
    assert isinstance(exc.value, StageUnavailableError)
    assert f"cannot reach the ragserve service at {url}" in exc.value.message
    assert exc.value.url == url and "connection failed" in exc.value.reason
    assert len(sleeps) == 2  # three tries in all


async def test_async_connection_refused_is_a_typed_error(sleeps: list[float]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncRagServeClient(url, backoff_s=0.1, max_attempts=2) as client:
        with pytest.raises(ServiceUnreachableError, match=f"service at {url}"):
            await client.ingest([{"id": "a.md", "text": "secret text"}])
    assert len(sleeps) == 1


# --------------------------------------------------------------------------- error answers


def test_error_answers_become_typed_errors_with_message_and_details(srv: Server) -> None:
    details = [{"loc": ["body", "top_k"], "msg": "too large", "type": "less_than_equal"}]
    srv.answer("/v1/query",
               Scripted(422, error_body("invalid_request", "top_k: too large", details)),
               Scripted(413, error_body("payload_too_large", "body is too large")),
               Scripted(401, error_body("unauthorized", "missing API key")),
               Scripted(503, error_body("stage_unavailable", "generator down")),
               Scripted(502, "<html> Bad\n gateway </html>"),
               Scripted(502, None))
    srv.answer("/v1/documents/gone.md", Scripted(404, error_body("not_found", "no gone.md")))
    question = "what is my private question"
    with RagServeClient(srv.url, max_attempts=1) as client:
        with pytest.raises(InvalidRequestError) as invalid:
            client.query(question)
        with pytest.raises(PayloadTooLargeError, match="body is too large"):
            client.query(question)
        with pytest.raises(ServiceError) as unauthorized:
            client.query(question)
        with pytest.raises(StageUnavailableError) as unavailable:
            client.query(question)
        with pytest.raises(ServiceError) as bad_gateway:
            client.query(question)
        with pytest.raises(ServiceError) as empty:
            client.query(question)
        with pytest.raises(NotFoundError, match="no gone.md"):
            client.get_document("gone.md")
    assert invalid.value.message == "top_k: too large" and invalid.value.details == details
    assert (unauthorized.value.status_code, unauthorized.value.code) == (401, "unauthorized")
    assert not isinstance(unavailable.value, StageTimeoutError)
    assert bad_gateway.value.status_code == 502
    assert bad_gateway.value.message == "HTTP 502: <html> Bad gateway </html>"
    assert empty.value.message == "HTTP 502" and empty.value.code == "http_error"
    for exc in (invalid, unauthorized, unavailable, bad_gateway):
        assert "private" not in str(exc.value)  # query text never lands in messages
    assert len(srv.calls("/v1/query")) == 6


async def test_async_error_answers_are_typed_and_4xx_is_not_retried(srv: Server) -> None:
    srv.answer("/v1/embeddings", Scripted(422, error_body("invalid_request", "unknown model")))
    async with AsyncRagServeClient(srv.url) as client:
        with pytest.raises(InvalidRequestError, match="unknown model"):
            await client.embeddings("text", model="other")
    assert len(srv.calls("/v1/embeddings")) == 1


def test_ready_returns_the_not_ready_body_of_a_503(srv: Server, sleeps: list[float]) -> None:
    srv.answer("/readyz", Scripted(503, {"ready": False, "stages": {"generator": "loading"}}))
    with RagServeClient(srv.url) as client:
        assert client.ready() == {"ready": False, "stages": {"generator": "loading"}}
    assert len(srv.calls("/readyz")) == 1 and sleeps == []


def test_service_error_survives_pickling() -> None:
    exc = pickle.loads(pickle.dumps(ServiceError("nope", status_code=401, code="unauthorized")))
    assert (exc.message, exc.status_code, exc.code) == ("nope", 401, "unauthorized")
    gone = pickle.loads(pickle.dumps(ServiceUnreachableError("http://h:1", "refused")))
    assert gone.url == "http://h:1" and "http://h:1" in gone.message


# --------------------------------------------------------------------------- streams


def test_stream_yields_events_and_retries_before_the_first(srv: Server) -> None:
    srv.answer("/v1/query",
               Scripted(503, error_body("stage_unavailable", "busy"), {"Retry-After": "0"}),
               Scripted(stream=True, break_after=0))  # drops before any event
    with RagServeClient(srv.url, backoff_s=0, api_key="k") as client:
        events = list(client.query_stream("How?", rerank_top_n=2))
    assert events == [ServerSentEvent(name, data) for name, data in EVENTS]
    assert events[1].event == "token" and events[1].data == {"delta": "Chunks "}
    calls = srv.calls("/v1/query")
    assert len(calls) == 3
    assert calls[0]["body"] == {"query": "How?", "rerank_top_n": 2, "stream": True}
    assert calls[0]["headers"]["accept"] == "text/event-stream"
    assert calls[0]["headers"]["authorization"] == "Bearer k"
    assert len({_request_id(c) for c in calls}) == 1


def test_stream_broken_after_the_first_event_is_not_retried(srv: Server) -> None:
    srv.answer("/v1/query", Scripted(stream=True, break_after=2))
    received = []
    with RagServeClient(srv.url, backoff_s=0) as client:
        with pytest.raises(ServiceUnreachableError, match="broke during the stream"):
            for event in client.query_stream("How?"):
                received.append(event.event)
    assert received == ["meta", "token"]
    assert len(srv.calls("/v1/query")) == 1


def test_stream_error_answer_before_events_raises_typed_error(srv: Server) -> None:
    srv.answer("/v1/query", *[Scripted(503, error_body("stage_timeout", "too slow"),
                                       {"Retry-After": "0"})] * 3)
    with RagServeClient(srv.url) as client:
        with pytest.raises(StageTimeoutError, match="too slow"):
            list(client.query_stream("How?"))
    assert len(srv.calls("/v1/query")) == 3


async def test_async_stream_retries_before_the_first_event_only(srv: Server) -> None:
    srv.answer("/v1/query", Scripted(stream=True, break_after=0),
               Scripted(stream=True, break_after=1))
    async with AsyncRagServeClient(srv.url, backoff_s=0) as client:
        received = []
        with pytest.raises(ServiceUnreachableError):
            async for event, data in client.query_stream("How?"):
                received.append((event, data))
        assert received == [EVENTS[0]]
        assert len(srv.calls("/v1/query")) == 2
        events = [e async for e in client.query_stream("How?", max_tokens=5)]
    assert [e.event for e in events] == ["meta", "token", "token", "done"]
    assert srv.calls("/v1/query")[-1]["body"] == {"query": "How?", "max_tokens": 5,
                                                  "stream": True}


def test_a_500_from_serves_proxy_is_retried_but_not_ragserves_own(
        srv: Server, sleeps: list[float]) -> None:
    # Serve's proxy answers a plain-text 500 when the replica died under the request
    srv.answer("/v1/search", Scripted(500, "Internal Server Error"),
               Scripted(200, {"results": [], "timings": {}, "backends": {}}))
    with RagServeClient(srv.url, backoff_s=0.01) as client:
        assert client.search("q").results == []
    assert len(srv.calls("/v1/search")) == 2 and len(sleeps) == 1
    srv.reset()
    srv.answer("/v1/search", Scripted(500, error_body("internal", "a bug of ours")))
    with RagServeClient(srv.url) as client:
        with pytest.raises(ServiceError) as ours:
            client.search("q")
    assert ours.value.status_code == 500 and len(srv.calls("/v1/search")) == 1
