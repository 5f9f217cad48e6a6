"""Cache tier logic with in-process stores and stand-in stages: TTL and LRU bounds, the breaker
around a failing store, embedding reassembly, query keys and invalidation, single-flight and
sessions. The same code against a real Redis is in tests/integration/test_cache_redis.py."""

from __future__ import annotations

import asyncio

import pytest

from ragserve.cache import CacheLayer
from ragserve.cache.embeddings import decode_vector, encode_vector
from ragserve.cache.keys import KeySpace, normalise_text
from ragserve.cache.store import GuardedStore, MemoryStore
from ragserve.config import CacheConfig
from ragserve.schemas import GenerationResult, IngestRequest, QueryRequest, SearchRequest, Usage
from tests.fakes import FakeGenerator
from tests.unit.test_pipeline import DOCS, make


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BrokenStore(MemoryStore):
    """A store whose every operation fails while ``down`` is set."""

    backend = "broken"

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0

    async def mget(self, keys):
        self.calls += 1
        if self.down:
            raise ConnectionError("store down")
        return await super().mget(keys)

    async def get(self, key):
        self.calls += 1
        if self.down:
            raise ConnectionError("store down")
        return await super().get(key)


async def test_memory_store_ttl_and_lru_bound():
    clock = Clock()
    store = MemoryStore(max_entries=2, clock=clock)
    await store.set("a", b"1", ttl_s=10)
    assert await store.ttl("a") == pytest.approx(10)
    clock.now += 9.9
    assert await store.get("a") == b"1"
    clock.now += 0.2
    assert await store.get("a") is None  # expired
    await store.mset({"x": b"1", "y": b"2"}, ttl_s=100)
    await store.get("x")  # x is now the most recently used
    await store.set("z", b"3", ttl_s=100)
    assert await store.mget(["x", "y", "z"]) == [b"1", None, b"3"]  # y evicted
    assert await store.set("z", b"4", ttl_s=100, nx=True) is False
    assert await store.incr("n") == 1 and await store.incr("n") == 2
    assert await store.delete_if_equals("z", b"other") is False
    assert await store.delete_if_equals("z", b"3") is True


async def test_guarded_store_bypasses_while_open_and_recovers():
    clock = Clock()
    inner = BrokenStore()
    guarded = GuardedStore(inner, timeout_s=0.5, clock=clock)
    await inner.set("k", b"v", ttl_s=100)
    inner.down = True
    for _ in range(3):  # failure_threshold=3 by default
        assert await guarded.get("k") is None
    assert not guarded.available and guarded.counters.errors == 3
    calls = inner.calls
    assert await guarded.mget(["k", "k"]) == [None, None]
    assert inner.calls == calls and guarded.counters.bypassed == 1  # not even tried
    inner.down = False
    clock.now += 5.0  # reset_timeout_s: one trial call goes through and closes the breaker
    assert await guarded.get("k") == b"v"
    assert guarded.available and guarded.health()["breaker"]["state"] == "closed"


async def test_guarded_store_bounds_a_hanging_store():
    class Hanging(MemoryStore):
        async def get(self, key):
            await asyncio.sleep(10)

    guarded = GuardedStore(Hanging(), timeout_s=0.05)
    assert await guarded.get_checked("k") == (False, None)
    assert guarded.counters.errors == 1


def test_keys_hash_text_and_normalise_whitespace():
    keys = KeySpace("p")
    k1 = keys.embedding("model", "query", "What is  Ray?\n")
    assert k1 == keys.embedding("model", "query", "What is Ray?")
    assert k1 != keys.embedding("model", "passage", "What is Ray?")
    assert k1 != keys.embedding("other", "query", "What is Ray?")
    assert "Ray" not in k1 and k1.startswith("p:emb:v1:")
    assert normalise_text(" ｆｕｌｌ\u00a0width ") == "full width"


def test_vectors_round_trip_as_float32_bytes():
    data = encode_vector([0.25, -1.5, 3.0])
    assert len(data) == 12
    assert decode_vector(data, 3) == [0.25, -1.5, 3.0]
    assert decode_vector(data, 4) is None  # another model's dimension reads as a miss


async def test_cached_embedder_only_misses_reach_the_model_in_order():
    layer = CacheLayer.from_config(CacheConfig())
    pipeline = make()
    fake = pipeline.stages.embedder
    embedder = layer.embedder(fake)
    await embedder.info()
    first = await embedder.embed(["a", "b", "a"], "passage")
    assert fake.calls == 1
    assert first[0] == first[2]
    assert layer.counters.tiers["embeddings"].as_dict()["misses"] == 3
    seen = []
    real_embed = fake.embed

    async def spy(texts, kind="passage"):
        seen.append(list(texts))
        return await real_embed(texts, kind)

    fake.embed = spy
    again = await embedder.embed(["b", "c", "a"], "passage")
    assert seen == [["c"]]  # only the miss, once
    assert again[0] == first[1] and again[2] == first[0]
    assert await embedder.embed(["a"], "query") and seen[-1] == ["a"]  # kind is in the key


async def test_a_quantised_model_never_reads_the_float_vectors():
    layer = CacheLayer.from_config(CacheConfig())
    fake = make().stages.embedder
    await layer.embedder(fake).embed(["a"], "passage")
    assert fake.calls == 1
    real_info = fake.info

    async def int8_info():
        return (await real_info()).model_copy(update={"quantize": "int8"})

    fake.info = int8_info
    await layer.embedder(fake).embed(["a"], "passage")
    assert fake.calls == 2  # same model name, other vectors: a miss


def cached_pipeline(config: CacheConfig | None = None, generator=None):
    layer = CacheLayer.from_config(config or CacheConfig())
    inner = make(generator=generator)
    inner.stages.embedder = layer.embedder(inner.stages.embedder)
    return layer, layer.pipeline(inner, fingerprint="test")


class CountingGenerator(FakeGenerator):
    def __init__(self, delay: float = 0.0, **kw):
        super().__init__(**kw)
        self.requests = []
        self.delay = delay

    async def generate(self, req):
        self.requests.append(req)
        await asyncio.sleep(self.delay)
        return GenerationResult(text=f"answer {len(self.requests)} [1]", usage=Usage(),
                                backend="counting", cited=[1], passages_used=1)


async def test_query_hit_skips_the_pipeline_and_ingest_invalidates():
    gen = CountingGenerator()
    layer, p = cached_pipeline(generator=gen)
    await p.startup()
    await p.ingest(DOCS)
    r1 = await p.query(QueryRequest(query="what is alpha?"))
    r2 = await p.query(QueryRequest(query="  what is   alpha? "))  # same after normalising
    assert (r1.cache.query, r2.cache.query) == ("miss", "hit")
    assert r2.answer == r1.answer and len(gen.requests) == 1
    # a hit reports its own timings (no stage ran), not the request that computed it
    assert r1.timings.generate_ms > 0 and r2.timings.generate_ms == 0
    assert 0 <= r2.timings.total_ms < r1.timings.total_ms
    r3 = await p.query(QueryRequest(query="what is alpha?", top_k=3))  # parameters are keyed
    assert r3.cache.query == "miss"
    # Unchanged re-ingest keeps the version; a changed document advances it.
    await p.ingest(DOCS)
    assert (await p.query(QueryRequest(query="what is alpha?"))).cache.query == "hit"
    await p.ingest(IngestRequest(documents=[{"id": "a", "text": "alpha text, revised"}]))
    r4 = await p.query(QueryRequest(query="what is alpha?"))
    assert r4.cache.query == "miss" and r4.answer != r1.answer
    await p.delete_document("b")
    assert (await p.query(QueryRequest(query="what is alpha?"))).cache.query == "miss"
    assert layer.counters.tiers["queries"].hits == 2


async def test_degraded_answers_are_not_cached():
    _, p = cached_pipeline(generator=FakeGenerator(fail=True))
    await p.startup()
    await p.ingest(DOCS)
    for _ in range(2):
        r = await p.query(QueryRequest(query="alpha?"))
        assert r.degraded and r.cache.query == "miss"


async def test_concurrent_identical_queries_compute_once():
    gen = CountingGenerator(delay=0.2)
    layer, p = cached_pipeline(generator=gen)
    await p.startup()
    await p.ingest(DOCS)
    results = await asyncio.gather(*(p.query(QueryRequest(query="alpha?")) for _ in range(8)))
    assert len(gen.requests) == 1
    assert sorted(r.cache.query for r in results) == ["deduplicated"] * 7 + ["miss"]
    assert len({r.answer for r in results}) == 1 and layer.counters.deduplicated == 7


async def test_search_results_are_cached_too():
    _, p = cached_pipeline()
    await p.startup()
    await p.ingest(DOCS)
    a = await p.search(SearchRequest(query="beta"))
    b = await p.search(SearchRequest(query="beta"))
    assert (a.cache.query, b.cache.query) == ("miss", "hit")
    assert [c.chunk_id for c in a.results] == [c.chunk_id for c in b.results]


async def test_a_follow_up_uses_the_session_history():
    gen = CountingGenerator()
    _, p = cached_pipeline(generator=gen)
    await p.startup()
    await p.ingest(DOCS)
    first = await p.query(QueryRequest(query="what is alpha?", session_id="s1"))
    follow = await p.query(QueryRequest(query="and the revision?", session_id="s1"))
    assert first.cache.session_turns == 0 and follow.cache.session_turns == 1
    assert gen.requests[-1].history == [("what is alpha?", first.answer)]
    # The same words in another session are another conversation (and another cache key).
    other = await p.query(QueryRequest(query="and the revision?", session_id="s2"))
    assert other.cache.query == "miss" and gen.requests[-1].history == []


async def test_query_cache_off_still_answers():
    config = CacheConfig(queries={"enabled": False})
    _, p = cached_pipeline(config=config)
    await p.startup()
    await p.ingest(DOCS)
    r = await p.query(QueryRequest(query="alpha?"))
    assert r.cache.query == "off" and r.answer


async def test_store_failure_during_ingest_bypasses_query_cache_until_version_advances():
    layer, p = cached_pipeline()
    await p.startup()
    await p.ingest(DOCS)
    await p.query(QueryRequest(query="alpha?"))
    assert (await p.query(QueryRequest(query="alpha?"))).cache.query == "hit"
    real_incr = layer.store.store.incr

    async def failing_incr(key):
        raise ConnectionError("down")

    layer.store.store.incr = failing_incr
    await p.ingest(IngestRequest(documents=[{"id": "c", "text": "gamma text"}]))
    r = await p.query(QueryRequest(query="alpha?"))
    assert r.cache.query == "bypass"  # never the pre-ingest answer
    assert p.health()["index_version_pending"] is True
    layer.store.store.incr = real_incr
    r = await p.query(QueryRequest(query="alpha?"))
    assert r.cache.query == "miss" and p.health()["index_version_pending"] is False


def test_several_ingress_replicas_need_a_shared_store():
    from graphs.args import RagAppArgs

    scaled = {"deployment": {"num_replicas": 2}}
    with pytest.raises(ValueError, match="redis_url"):
        RagAppArgs.model_validate({"ingress": scaled})
    shared = {**scaled, "config": {"cache": {"redis_url": "redis://redis:6379/0"}}}
    assert RagAppArgs.model_validate({"ingress": shared}).ingress.deployment.num_replicas == 2
    local = RagAppArgs.model_validate({"ingress": {**scaled, "config": {
        "cache": {"queries": {"enabled": False}}}}})
    assert local.ingress.config.cache.redis_url is None


def test_fingerprint_changes_with_what_changes_answers():
    from graphs.args import RagAppArgs

    base = RagAppArgs().fingerprint()
    assert RagAppArgs.model_validate(
        {"embedder": {"config": {"batching": {"max_batch_size": 8}}}}).fingerprint() == base
    assert RagAppArgs.model_validate(
        {"generator": {"config": {"default_max_tokens": 64}}}).fingerprint() != base
    assert RagAppArgs.model_validate(
        {"retriever": {"config": {"fusion": "rrf"}}}).fingerprint() != base


async def test_embeddings_endpoint_validates_and_uses_the_cache():
    import httpx

    from ragserve.edge import create_app

    _, p = cached_pipeline()
    await p.startup()
    app = create_app(lambda: p)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/embeddings", json={"input": ["alpha", "beta"]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [d["index"] for d in body["data"]] == [0, 1] and len(body["data"][0]["embedding"]) == 3
        assert body["model"] == "fake" and body["cache"]["embedding_misses"] == 2
        again = (await c.post("/v1/embeddings", json={"input": "alpha"})).json()
        assert again["cache"]["embedding_hits"] == 1
        assert again["data"][0]["embedding"] == body["data"][0]["embedding"]
        for bad in ({"input": []}, {"input": [" "]}, {"input": "x", "model": "other"},
                    {"input": "x", "input_type": "doc"}):
            r = await c.post("/v1/embeddings", json=bad)
            assert r.status_code == 422 and r.json()["error"]["message"], bad


async def test_sessions_off_ignores_session_ids():
    _, p = cached_pipeline(config=CacheConfig(sessions={"enabled": False}))
    await p.startup()
    await p.ingest(DOCS)
    for _ in range(2):
        r = await p.query(QueryRequest(query="alpha?", session_id="s"))
        assert r.answer and r.cache.session_turns == 0
    events = [e async for e in p.query_events(QueryRequest(query="alpha?", session_id="s"))]
    assert events[-1][0] == "done" and events[-1][1]["cache"]["session_turns"] == 0


async def test_a_streamed_answer_extends_the_session():
    gen = CountingGenerator()
    _, p = cached_pipeline(generator=gen)
    await p.startup()
    await p.ingest(DOCS)
    events = [e async for e in p.query_events(QueryRequest(query="what is beta?", session_id="z"))]
    assert events[-1][1]["answer"]
    await p.query(QueryRequest(query="and alpha?", session_id="z"))
    assert gen.requests[-1].history[0][0] == "what is beta?"


def test_stage_budgets_keep_the_reranker_default():
    from ragserve.config import IngressConfig

    assert IngressConfig().stage_timeouts_s == {"reranker": 5.0}
    cfg = IngressConfig.model_validate({"stage_timeouts_s": {"retriever": 10}})
    assert cfg.stage_timeouts_s == {"reranker": 5.0, "retriever": 10}
    assert IngressConfig.model_validate(
        {"stage_timeouts_s": {"reranker": 1}}).stage_timeouts_s == {"reranker": 1}
    with pytest.raises(ValueError):
        IngressConfig.model_validate({"stage_timeouts_s": {"embedder": 0}})
