"""Logic of the request flow with stand-in stages (no models, no Ray): degradation,
timeouts, idempotent ingestion, validation, and HTTP error mapping."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ragserve.config import IngressConfig
from ragserve.edge import Guard, HandleAPI, create_app
from ragserve.errors import InvalidRequestError, RagServeError, StageUnavailableError
from ragserve.pipeline import NO_PASSAGES_ANSWER, RAGPipeline, StageSet
from ragserve.schemas import (
    DocumentIn, IngestRequest, QueryRequest, RerankResult, ScoredChunk, SearchRequest,
)
from tests.fakes import FakeEmbedder, FakeGenerator, FakeReranker


class MemoryRetriever:
    def __init__(self):
        self.docs: dict[str, list] = {}
        self.replacements = 0

    async def ensure_collection(self, info):
        self.info = info

    async def health(self):
        return {"backend": "memory"}

    async def search(self, vector, top_k, filters=None, *, query_text=None, mode=None):
        out = []
        for chunks in self.docs.values():
            for c in chunks:
                out.append(ScoredChunk(**c.model_dump(), score=0.5, retrieval_score=0.5))
        return out[:top_k]

    async def chunk_hashes_many(self, doc_ids):
        return {d: {c.chunk_id: c.doc_hash for c in self.docs.get(d, [])} for d in doc_ids}

    async def replace_documents(self, documents):
        self.replacements += 1
        for doc_id, chunks, vectors in documents:
            assert len(chunks) == len(vectors)
            self.docs[doc_id] = list(chunks)

    async def get_document(self, doc_id):
        return self.docs.get(doc_id, [])

    async def delete_document(self, doc_id):
        return len(self.docs.pop(doc_id, []))


def make(reranker=None, generator=None, timeout=5.0):
    stages = StageSet(embedder=FakeEmbedder(), retriever=MemoryRetriever(),
                      reranker=reranker or FakeReranker(),
                      generator=generator if generator is not None else FakeGenerator())
    config = IngressConfig.model_validate({
        "stage_timeout_s": timeout, "stage_timeouts_s": {"reranker": timeout},
        "limits": {"max_documents_per_request": 3}})
    return RAGPipeline(stages, config=config)


DOCS = IngestRequest(documents=[{"id": "a", "text": "alpha text"}, {"id": "b", "text": "beta text"}])


async def test_ingest_is_idempotent_and_updates_replace():
    p = make()
    await p.startup()
    first = await p.ingest(DOCS)
    assert [d.status for d in first.documents] == ["created", "created"]
    calls = p.stages.embedder.calls
    again = await p.ingest(DOCS)
    assert [d.status for d in again.documents] == ["unchanged", "unchanged"]
    assert again.chunks_embedded == 0 and p.stages.embedder.calls == calls  # nothing re-embedded
    changed = await p.ingest(IngestRequest(documents=[{"id": "a", "text": "alpha text v2"}]))
    assert changed.documents[0].status == "updated"
    meta = await p.ingest(IngestRequest(documents=[{"id": "a", "text": "alpha text v2", "metadata": {"source": "x"}}]))
    assert meta.documents[0].status == "updated"  # metadata is part of a document's content
    assert (await p.get_document("a")).metadata == {"source": "x"}


async def test_bad_batch_writes_nothing():
    p = make()
    await p.startup()
    from ragserve.errors import InvalidRequestError, PayloadTooLargeError

    with pytest.raises(InvalidRequestError):
        # The request model refuses repeated ids; the indexer checks again for requests built
        # without validation.
        await p.ingest(IngestRequest.model_construct(documents=[
            DocumentIn(id="a", text="x"), DocumentIn(id="a", text="y")]))
    with pytest.raises(PayloadTooLargeError):
        await p.ingest(IngestRequest(documents=[{"id": f"d{i}", "text": "x"} for i in range(4)]))
    assert p.stages.retriever.replacements == 0


async def test_reranker_failure_degrades_to_retriever_order():
    p = make(reranker=FakeReranker(fail=True))
    await p.startup()
    await p.ingest(DOCS)
    res = await p.search(SearchRequest(query="alpha", rerank_top_n=2))
    assert res.degraded and res.backends.reranker == "retrieval-order"
    assert [r.doc_id for r in res.results] == ["a", "b"] and res.warnings


class CountingReranker:
    """Answers ``health()`` with ``backend`` and counts the ``rerank`` calls it gets."""

    def __init__(self, backend: str, health_fails: bool = False):
        self.backend, self.health_fails, self.calls = backend, health_fails, 0

    async def rerank(self, query, chunks, top_n):
        self.calls += 1
        return RerankResult(chunks=chunks[:top_n], backend=self.backend)

    async def health(self):
        if self.health_fails:
            raise StageUnavailableError("reranker replica died")
        return {"backend": self.backend}


async def _search_twice(p):
    await p.ingest(DOCS)
    first = await p.search(SearchRequest(query="alpha", rerank_top_n=1))
    await asyncio.sleep(0.01)  # the background probe answers
    return first, await p.search(SearchRequest(query="alpha", rerank_top_n=1))


async def test_a_pass_through_reranker_is_skipped_once_known():
    reranker = CountingReranker("retrieval")
    first, second = await _search_twice(make(reranker=reranker))
    assert reranker.calls == 1  # the first request called it; the probe then said "retrieval"
    assert [r.chunk_id for r in second.results] == [r.chunk_id for r in first.results]
    assert second.backends.reranker == "retrieval" and second.timings.rerank_ms == 0.0
    assert not second.degraded


@pytest.mark.parametrize("reranker", [CountingReranker("cross-encoder:ms-marco"),
                                      CountingReranker("retrieval", health_fails=True)],
                         ids=["model", "probe-fails"])
async def test_a_reranker_with_a_model_or_unknown_is_always_called(reranker):
    await _search_twice(make(reranker=reranker))
    assert reranker.calls == 2


async def test_slow_reranker_is_cut_by_the_stage_timeout():
    p = make(reranker=FakeReranker(delay=1.0), timeout=0.2)
    await p.startup()
    await p.ingest(DOCS)
    res = await p.search(SearchRequest(query="alpha"))
    assert res.degraded and "did not answer within" in res.warnings[0]


async def test_generator_failure_returns_passages_degraded():
    p = make(generator=FakeGenerator(fail=True))
    await p.startup()
    await p.ingest(DOCS)
    res = await p.query(QueryRequest(query="alpha?"))
    assert res.degraded and res.answer == "" and len(res.citations) == 2


async def test_query_citations_follow_the_generator_plan():
    p = make()
    await p.startup()
    await p.ingest(DOCS)
    res = await p.query(QueryRequest(query="alpha?", rerank_top_n=2))
    assert res.answer == "answer [1]"
    assert len(res.citations) == 1 and res.citations[0].cited and res.citations[0].number == 1
    assert res.usage.total_tokens == 7 and "did not fit" in res.warnings[0]


async def test_stream_events_order():
    p = make()
    await p.startup()
    await p.ingest(DOCS)
    events = [e async for e in p.query_events(QueryRequest(query="alpha?", stream=True))]
    assert [e for e, _ in events] == ["meta", "token", "token", "done"]
    assert events[-1][1]["answer"] == "answer [1]"


async def test_search_only_app_has_no_query():
    p = RAGPipeline(StageSet(embedder=FakeEmbedder(), retriever=MemoryRetriever(),
                             reranker=FakeReranker()))
    from ragserve.errors import NotFoundError

    with pytest.raises(NotFoundError):
        await p.query(QueryRequest(query="x"))


async def test_http_error_mapping():
    p = make(reranker=FakeReranker(), generator=FakeGenerator())
    await p.startup()

    class Down(FakeEmbedder):
        async def embed(self, texts, kind="passage"):
            raise ConnectionError("embedder gone")

    app = create_app(lambda: p, max_request_bytes=10_000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.post("/v1/search", json={"query": "x", "top_k": -1})).status_code == 422
        assert (await c.get("/v1/documents/nope")).status_code == 404
        big = await c.post("/v1/documents", content=b"x" * 20_000, headers={"content-type": "application/json"})
        assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
        p.stages.embedder = Down()
        r = await c.post("/v1/search", json={"query": "x"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "embedder gone" in r.json()["error"]["message"]


async def test_streamed_and_whole_answers_agree():
    for generator in (FakeGenerator(), FakeGenerator(fail=True)):
        p = make(generator=generator)
        await p.startup()
        await p.ingest(DOCS)
        req = QueryRequest(query="alpha?", rerank_top_n=2)
        whole = await p.query(req)
        events = [e async for e in p.query_events(req)]
        done = events[-1][1]
        assert events[-1][0] == "done"
        assert done["answer"] == whole.answer and done["warnings"] == whole.warnings
        assert done["degraded"] == whole.degraded
        assert done["cited"] == [c.number for c in whole.citations if c.cited]
        assert done["passages_used"] == len(whole.citations)


async def test_no_passages_is_one_answer_streamed_or_not():
    p = make()
    await p.startup()  # nothing ingested
    whole = await p.query(QueryRequest(query="anything?"))
    events = [e async for e in p.query_events(QueryRequest(query="anything?", stream=True))]
    assert whole.answer == events[-1][1]["answer"] == NO_PASSAGES_ANSWER
    assert whole.citations == [] and events[0][1]["citations"] == []


async def _http(p, **app_kwargs):
    app = create_app(lambda: p, **app_kwargs)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_an_invalid_streamed_query_is_a_422_before_the_stream():
    p = make()
    await p.startup()
    async with await _http(p) as c:
        r = await c.post("/v1/query", json={"query": "\u0000\u0001", "stream": True})
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/json")
        assert "empty after removing control characters" in r.json()["error"]["message"]
        r = await c.post("/v1/query", json={"query": "x" * 5000, "stream": True})
        assert r.status_code == 413  # a size limit: the query is over max_query_chars


async def test_a_streamed_query_with_a_stage_down_is_a_503():
    p = make()
    await p.startup()

    class Down(FakeEmbedder):
        async def embed(self, texts, kind="passage"):
            raise ConnectionError("embedder gone")

    p.stages.embedder = Down()
    async with await _http(p) as c:
        r = await c.post("/v1/query", json={"query": "alpha?", "stream": True})
        assert r.status_code == 503 and r.json()["error"]["code"] == "stage_unavailable"


async def test_chunked_bodies_are_bounded_too():
    p = make()
    await p.startup()

    async def chunked():
        for _ in range(20):
            yield b" " * 1000

    async with await _http(p, max_request_bytes=10_000) as c:
        r = await c.post("/v1/documents", content=chunked(),
                         headers={"content-type": "application/json"})
        assert "content-length" not in r.request.headers
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        assert p.stages.retriever.replacements == 0
        ok = await c.post("/v1/search", json={"query": "alpha"})
        assert ok.status_code == 200


async def test_request_ids_in_and_out():
    p = make()
    await p.startup()
    async with await _http(p) as c:
        r = await c.get("/healthz", headers={"x-request-id": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        fresh = await c.get("/healthz", headers={"x-request-id": "bad id\r\nx: y"})
        assert fresh.headers["x-request-id"] != "bad id" and len(fresh.headers["x-request-id"]) == 32
        missing = await c.get("/v1/documents/nope", headers={"x-request-id": "req-9"})
        assert missing.status_code == 404 and missing.json()["error"]["request_id"] == "req-9"


async def test_one_guard_for_http_and_handles():
    seen = []

    async def only_key_k(ctx):
        seen.append((ctx.transport, ctx.operation))
        if ctx.credentials != "k":
            raise InvalidRequestError("no key")  # a real check raises 401/403/429

    guard = Guard([only_key_k])
    p = make()
    await p.startup()
    handles = HandleAPI(lambda: p, guard)
    async with await _http(p, guard=guard) as c:
        assert (await c.post("/v1/search", json={"query": "alpha"})).status_code == 422
        ok = await c.post("/v1/search", json={"query": "alpha"},
                          headers={"authorization": "Bearer k"})
        assert ok.status_code == 200
        assert (await c.get("/healthz")).status_code == 200  # liveness passes no guard
    with pytest.raises(RagServeError):
        await handles.search({"query": "alpha"})
    assert (await handles.search({"query": "alpha"}, credentials="k")).results is not None
    with pytest.raises(InvalidRequestError):  # a bad handle request is a typed error too
        await handles.search({"query": "alpha", "top_k": 0}, credentials="k")
    assert ("http", "search") in seen and ("handle", "search") in seen


async def test_an_answer_from_a_fallback_is_flagged_degraded():
    from ragserve.schemas import GenerationAttempt

    class FellBack(FakeGenerator):
        async def generate(self, req):
            res = await super().generate(req)
            return res.model_copy(update={"backend": "extractive", "attempts": [
                GenerationAttempt(backend="local", outcome="failed", reason="timeout", tries=3),
                GenerationAttempt(backend="extractive", outcome="ok", tries=1)]})

    p = make(generator=FellBack())
    await p.startup()
    await p.ingest(DOCS)
    res = await p.query(QueryRequest(query="alpha?"))
    assert res.answer and res.degraded and res.backends.generator == "extractive"
    assert any("answered by fallback extractive" in w and "local failed (timeout)" in w
               for w in res.warnings)
    p2 = make()
    await p2.startup()
    await p2.ingest(DOCS)
    assert not (await p2.query(QueryRequest(query="alpha?"))).degraded
