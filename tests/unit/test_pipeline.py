"""Logic of the request flow with stand-in stages (no models, no Ray): degradation,
timeouts, idempotent ingestion, validation, and HTTP error mapping."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest

from ragserve.api import create_app
from ragserve.config import ChunkingConfig
from ragserve.errors import StageUnavailableError
from ragserve.ingest.chunking import TokenChunker
from ragserve.pipeline import PipelineSettings, RAGPipeline
from ragserve.schemas import (
    EmbedderInfo, GenerationResult, IngestRequest, QueryRequest, RerankResult, ScoredChunk,
    SearchRequest, Usage,
)


class FakeEmbedder:
    def __init__(self):
        self.calls = 0

    async def info(self):
        return EmbedderInfo(model="fake", dimension=3, device="cpu", dtype="float32")

    async def embed(self, texts, kind="passage"):
        self.calls += 1
        return [[float(b) for b in hashlib.sha256(t.encode()).digest()[:3]] for t in texts]

    async def health(self):
        return {"backend": "fake"}


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


class Reranker:
    def __init__(self, fail=False, delay=0.0):
        self.fail, self.delay = fail, delay

    async def rerank(self, query, chunks, top_n):
        await asyncio.sleep(self.delay)
        if self.fail:
            raise StageUnavailableError("reranker replica died")
        return RerankResult(chunks=list(reversed(chunks))[:top_n], backend="fake-reranker")

    async def health(self):
        return {"backend": "fake-reranker"}


class Generator:
    name = "fake-gen"

    def __init__(self, fail=False):
        self.fail = fail

    async def generate(self, req):
        if self.fail:
            raise StageUnavailableError("LLM server down")
        return GenerationResult(text="answer [1]", usage=Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7),
                                backend=self.name, cited=[1], passages_used=1, passages_dropped=len(req.passages) - 1)

    async def stream(self, req):
        yield {"delta": "answer "}
        yield {"delta": "[1]"}
        yield {"result": await self.generate(req)}

    async def health(self):
        return {}


def make(reranker=None, generator=None, timeout=5.0):
    return RAGPipeline(
        embedder=FakeEmbedder(), retriever=MemoryRetriever(), reranker=reranker or Reranker(),
        generator=generator if generator is not None else Generator(),
        chunker=TokenChunker(ChunkingConfig()),
        settings=PipelineSettings(stage_timeout_s=timeout, max_documents_per_request=3),
    )


DOCS = IngestRequest(documents=[{"id": "a", "text": "alpha text"}, {"id": "b", "text": "beta text"}])


async def test_ingest_is_idempotent_and_updates_replace():
    p = make()
    await p.startup()
    first = await p.ingest(DOCS)
    assert [d.status for d in first.documents] == ["created", "created"]
    calls = p.embedder.calls
    again = await p.ingest(DOCS)
    assert [d.status for d in again.documents] == ["unchanged", "unchanged"]
    assert again.chunks_embedded == 0 and p.embedder.calls == calls  # nothing re-embedded
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
        await p.ingest(IngestRequest(documents=[{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]))
    with pytest.raises(PayloadTooLargeError):
        await p.ingest(IngestRequest(documents=[{"id": f"d{i}", "text": "x"} for i in range(4)]))
    assert p.retriever.replacements == 0


async def test_reranker_failure_degrades_to_retriever_order():
    p = make(reranker=Reranker(fail=True))
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
    p = make(reranker=Reranker(delay=1.0), timeout=0.2)
    await p.startup()
    await p.ingest(DOCS)
    res = await p.search(SearchRequest(query="alpha"))
    assert res.degraded and "did not answer within" in res.warnings[0]


async def test_generator_failure_returns_passages_degraded():
    p = make(generator=Generator(fail=True))
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
    p = RAGPipeline(embedder=FakeEmbedder(), retriever=MemoryRetriever(), reranker=Reranker(),
                    generator=None, chunker=TokenChunker(ChunkingConfig()))
    from ragserve.errors import NotFoundError

    with pytest.raises(NotFoundError):
        await p.query(QueryRequest(query="x"))


async def test_http_error_mapping():
    p = make(reranker=Reranker(), generator=Generator())
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
        p.embedder = Down()
        r = await c.post("/v1/search", json={"query": "x"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "embedder gone" in r.json()["error"]["message"]
