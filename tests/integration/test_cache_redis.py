"""The cache tiers against a real ``redis-server`` (started on a free port by the test) around
real stages: the bundled MiniLM embedder, Qdrant local mode, the extractive generator.

Two ``CacheLayer``s over the same Redis stand for two ingress replicas.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis

from ragserve.cache import CacheLayer
from ragserve.config import (
    CacheConfig,
    IngressConfig,
    EmbedderConfig,
    GeneratorConfig,
    RetrieverConfig,
)
from ragserve.embedding import SentenceTransformerEmbedder
from ragserve.embedding.local import LocalEmbedder
from ragserve.generation.factory import build_generator
from ragserve.pipeline import RAGPipeline, StageSet
from ragserve.reranking.lexical import RetrievalOrderScorer
from ragserve.reranking.local import ScorerReranker
from ragserve.retrieval.qdrant import QdrantRetriever
from ragserve.schemas import IngestRequest, QueryRequest, SearchRequest
from tests.corpus import DOCUMENTS, QUESTIONS

pytestmark = pytest.mark.slow


class CountingEmbedder:
    """The real model behind the Embedder protocol, counting the texts it encodes."""

    def __init__(self, encoder: SentenceTransformerEmbedder) -> None:
        self.backend = LocalEmbedder(encoder)
        self.encoded = 0

    async def embed(self, texts, kind="passage"):
        self.encoded += len(texts)
        return await self.backend.embed(texts, kind)

    async def info(self):
        return await self.backend.info()

    async def health(self):
        return await self.backend.health()


class CountingGenerator:
    """The real extractive generator, counting calls (optionally slowed to widen races)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.inner = build_generator(GeneratorConfig(backend={"backend": "extractive"}))
        self.inner.warm_up()
        self.requests = []
        self.delay_s = delay_s

    async def generate(self, req):
        self.requests.append(req)
        await asyncio.sleep(self.delay_s)
        return await self.inner.generate(req)

    async def stream(self, req):
        async for item in self.inner.stream(req):
            yield item

    async def health(self):
        return self.inner.health()


@pytest.fixture(scope="module")
def model():
    backend = SentenceTransformerEmbedder(EmbedderConfig(torch_threads=1))
    backend.warm_up()
    return backend


@pytest.fixture
async def retriever(tmp_path):
    r = QdrantRetriever(RetrieverConfig(path=str(tmp_path / "qdrant"), collection="cache"))
    await r.warm_up()
    yield r
    await r.aclose()


class Replica:
    """One ingress replica: its own cache layer (memory + Redis) around shared stages."""

    def __init__(self, config: CacheConfig, model, retriever, generator) -> None:
        self.layer = CacheLayer.from_config(config)
        self.embedder = CountingEmbedder(model)
        self.generator = generator
        inner = RAGPipeline(
            StageSet(embedder=self.layer.embedder(self.embedder), retriever=retriever,
                     reranker=ScorerReranker(RetrievalOrderScorer()), generator=generator),
            config=IngressConfig(stage_timeout_s=30),
        )
        self.pipeline = self.layer.pipeline(inner, fingerprint="it")

    async def start(self) -> "Replica":
        await self.pipeline.startup()
        return self


def config_for(server, *, reset_timeout_s: float = 0.5, **overrides) -> CacheConfig:
    return CacheConfig.model_validate({
        "redis_url": server.url,
        "breaker": {"failure_threshold": 3, "reset_timeout_s": reset_timeout_s}, **overrides})


async def test_ttls_are_what_config_says(redis_server, model, retriever):
    cfg = config_for(redis_server, embeddings={"ttl_s": 7 * 24 * 3600}, queries={"ttl_s": 3600},
                     sessions={"ttl_s": 1800})
    r = await Replica(cfg, model, retriever, CountingGenerator()).start()
    await r.pipeline.ingest(IngestRequest(documents=DOCUMENTS))
    await r.pipeline.query(QueryRequest(query=QUESTIONS[0][0], session_id="ttl"))
    client = redis.Redis.from_url(redis_server.url)
    try:
        async def ttls(pattern):
            keys = [k async for k in client.scan_iter(match=pattern)]
            assert keys, pattern
            return [await client.pttl(k) / 1000 for k in keys]

        assert all(7 * 24 * 3600 - 60 < t <= 7 * 24 * 3600 for t in await ttls("ragserve:emb:*"))
        assert all(3600 - 60 < t <= 3600 for t in await ttls("ragserve:q:*"))
        assert all(1800 - 60 < t <= 1800 for t in await ttls("ragserve:sess:*"))
        # Keys hold hashes, never the question's words.
        keys = [k async for k in client.scan_iter(match="ragserve:*")]
        assert not any(b"espresso" in k for k in keys)
    finally:
        await client.aclose()


async def test_a_hit_never_calls_the_model(redis_server, model, retriever):
    cfg = config_for(redis_server)
    a = await Replica(cfg, model, retriever, CountingGenerator()).start()
    await a.pipeline.ingest(IngestRequest(documents=DOCUMENTS))
    question = QUESTIONS[1][0]
    first = await a.pipeline.query(QueryRequest(query=question))
    encoded, generated = a.embedder.encoded, len(a.generator.requests)
    second = await a.pipeline.query(QueryRequest(query=question))
    assert second.cache.query == "hit" and second.answer == first.answer
    assert (a.embedder.encoded, len(a.generator.requests)) == (encoded, generated)
    # A different top_k is another answer, but the query's vector comes from the cache.
    third = await a.pipeline.search(SearchRequest(query=question, top_k=2))
    assert third.cache.query == "miss" and third.cache.embedding_hits == 1
    assert a.embedder.encoded == encoded
    # Another replica, with nothing in its own memory, is served by the same Redis.
    b = await Replica(cfg, model, retriever, CountingGenerator()).start()
    again = await b.pipeline.search(SearchRequest(query=question, top_k=2))
    assert again.cache.query == "hit" and b.embedder.encoded == 0
    vector_only = await b.pipeline.search(SearchRequest(query=question, top_k=3))
    assert vector_only.cache.embedding_hits == 1 and b.embedder.encoded == 0


async def test_ingest_and_delete_invalidate_cached_answers(redis_server, model, retriever):
    cfg = config_for(redis_server)
    a = await Replica(cfg, model, retriever, CountingGenerator()).start()
    b = await Replica(cfg, model, retriever, CountingGenerator()).start()
    await a.pipeline.ingest(IngestRequest(documents=DOCUMENTS))
    question = "How often should the espresso machine be descaled?"
    before = await a.pipeline.query(QueryRequest(query=question))
    assert "two weeks" in before.answer
    assert (await b.pipeline.query(QueryRequest(query=question))).cache.query == "hit"
    revised = {**DOCUMENTS[2], "text": DOCUMENTS[2]["text"].replace("every two weeks",
                                                                       "every month")}
    # The change goes through replica B; replica A must not serve its old answer.
    await b.pipeline.ingest(IngestRequest(documents=[revised]))
    after = await a.pipeline.query(QueryRequest(query=question))
    assert after.cache.query == "miss" and "every month" in after.answer
    await b.pipeline.delete_document(revised["id"])
    gone = await a.pipeline.query(QueryRequest(query=question))
    assert gone.cache.query == "miss"
    assert revised["id"] not in {c.doc_id for c in gone.citations}


async def test_concurrent_identical_queries_run_the_pipeline_once(redis_server, model, retriever):
    cfg = config_for(redis_server)
    generator = CountingGenerator(delay_s=0.3)
    replicas = [await Replica(cfg, model, retriever, generator).start() for _ in range(2)]
    await replicas[0].pipeline.ingest(IngestRequest(documents=DOCUMENTS))
    question = QUESTIONS[2][0]
    responses = await asyncio.gather(*(
        replicas[i % 2].pipeline.query(QueryRequest(query=question)) for i in range(10)))
    assert len(generator.requests) == 1  # one pipeline run for the whole burst
    assert len({r.answer for r in responses}) == 1
    outcomes = sorted(r.cache.query for r in responses)
    assert outcomes.count("miss") == 1 or outcomes.count("miss") == 2  # one per replica
    assert set(outcomes) <= {"miss", "deduplicated", "hit"}
    assert sum(rep.layer.counters.deduplicated for rep in replicas) >= 8


async def test_redis_outage_fails_no_request_and_caching_resumes(redis_server, model, retriever):
    cfg = config_for(redis_server)
    r = await Replica(cfg, model, retriever, CountingGenerator()).start()
    await r.pipeline.ingest(IngestRequest(documents=DOCUMENTS))
    questions = [q for q, _ in QUESTIONS]
    outcomes = []
    for i in range(30):
        if i == 10:
            redis_server.stop()
        resp = await r.pipeline.query(QueryRequest(query=questions[i % 3]))
        assert resp.answer and not resp.degraded  # nothing fails, nothing degrades
        outcomes.append(resp.cache.query)
    assert "hit" in outcomes[:10] and set(outcomes[12:]) == {"bypass"}
    ready, stages = await r.pipeline.readiness()
    assert ready and stages["cache"]["available"] is False and stages["cache"]["errors"] >= 1
    assert stages["cache"]["bypassed"] > 0  # the breaker spared the timeouts
    redis_server.start()  # same port, empty (no persistence)
    await asyncio.sleep(cfg.breaker.reset_timeout_s + 0.1)
    seen = [(await r.pipeline.query(QueryRequest(query=questions[0]))).cache.query
            for _ in range(4)]
    assert seen[-1] == "hit"
    ready, stages = await r.pipeline.readiness()
    assert stages["cache"]["available"] is True


async def test_a_follow_up_uses_the_earlier_turn_on_another_replica(redis_server, model, retriever):
    cfg = config_for(redis_server)
    a = await Replica(cfg, model, retriever, CountingGenerator()).start()
    b = await Replica(cfg, model, retriever, CountingGenerator()).start()
    await a.pipeline.ingest(IngestRequest(documents=DOCUMENTS))
    first = await a.pipeline.query(
        QueryRequest(query="How often does the espresso machine need descaling?", session_id="u1"))
    follow_up = "And which tablets should I use for it?"
    alone = await b.pipeline.search(SearchRequest(query=follow_up))
    reply = await b.pipeline.query(QueryRequest(query=follow_up, session_id="u1"))
    assert reply.cache.session_turns == 1
    assert b.generator.requests[-1].history == [
        ("How often does the espresso machine need descaling?", first.answer)]
    assert reply.citations[0].doc_id == "notes/coffee.txt"
    assert "blue descaling tablets" in reply.answer
    # Without the session the same words retrieve by themselves (no earlier turn applied).
    assert alone.cache.session_turns == 0


async def test_a_hung_redis_costs_at_most_a_few_timeouts(redis_server, model, retriever):
    import signal

    cfg = config_for(redis_server, timeout_s=0.1, reset_timeout_s=30)
    r = await Replica(cfg, model, retriever, CountingGenerator()).start()
    await r.pipeline.ingest(IngestRequest(documents=DOCUMENTS))
    redis_server.proc.send_signal(signal.SIGSTOP)  # accepts connections, never answers
    try:
        for i in range(12):
            resp = await r.pipeline.query(QueryRequest(query=f"{QUESTIONS[0][0]} ({i})"))
            assert resp.answer
        # Three timeouts trip the breaker; after that no call waits on the store at all.
        assert r.layer.store.counters.errors == cfg.breaker.failure_threshold
        assert r.layer.store.counters.bypassed > 0
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
