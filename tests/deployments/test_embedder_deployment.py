"""The embedder deployment in a real Serve replica: batching, reconfigure, truncation."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from ray import serve

from deployments.embedder import EmbedderDeployment
from ragserve.config import EmbedderConfig
from ragserve.embedding import SentenceTransformerEmbedder

pytestmark = pytest.mark.slow
APP = "embedder-test"


def _counting(encoder_cls: type) -> type:
    """``encoder_cls`` recording the size of every ``encode`` call (one Serve batch each) and
    reporting them in ``health()``. Made in a function so Ray pickles the class by value: the
    replica cannot import a test module."""

    class CountingEncoder(encoder_cls):
        def __init__(self, config: EmbedderConfig) -> None:
            super().__init__(config)
            self.encode_sizes: list[int] = []

        def encode(self, texts, kinds):
            self.encode_sizes.append(len(texts))
            return super().encode(texts, kinds)

        def health(self) -> dict:
            return {**super().health(), "encode_sizes": list(self.encode_sizes)}

    return CountingEncoder


CountingEncoder = _counting(SentenceTransformerEmbedder)


def _run(user_config: dict):
    # @serve.batch needs a replica context (it fails outside Serve), so this runs a replica.
    dep = serve.deployment(EmbedderDeployment, name="Embedder").options(
        max_ongoing_requests=64,
        user_config=user_config,
        ray_actor_options={"num_cpus": 0.5},
    )
    return serve.run(dep.bind(EmbedderConfig(torch_threads=1), backend_cls=CountingEncoder),
                     name=APP, route_prefix=None)


@pytest.fixture(scope="module")
def embedder(serve_instance):
    yield _run({"max_batch_size": 16, "batch_wait_timeout_s": 0.05})
    serve.delete(APP)


@pytest.fixture(scope="module")
def local_model():
    m = SentenceTransformerEmbedder(EmbedderConfig(torch_threads=1))
    m.warm_up()
    return m


def test_vectors_match_the_model_in_order_and_are_normalised(embedder, local_model):
    texts = ["a short one", "a considerably longer sentence about vector search " * 3, "mid size text"]
    got = np.array(embedder.embed.remote(texts, "passage").result(timeout_s=60))
    want = local_model.encode(texts, ["passage"] * 3)
    assert got.shape == (3, 384)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


def test_overlong_input_is_truncated_not_an_error(embedder):
    v = embedder.embed.remote(["word " * 50_000], "query").result(timeout_s=60)
    assert len(v) == 1 and len(v[0]) == 384


def test_concurrent_callers_share_batches(embedder):
    def encode_sizes() -> list[int]:
        return embedder.health.remote().result(timeout_s=30)["encode_sizes"]

    callers = 24
    before = len(encode_sizes())

    async def burst():
        calls = [embedder.embed.remote([f"query number {i}"], "query") for i in range(callers)]
        return await asyncio.gather(*calls)

    results = asyncio.run(burst())
    assert len(results) == callers and all(len(r[0]) == 384 for r in results)
    sizes = encode_sizes()[before:]
    # Each single-text caller is one batch item: the model saw every text once, in far fewer
    # calls than callers (unbatched, it would be one call per caller).
    assert sum(sizes) == callers, sizes
    assert len(sizes) <= callers // 2 and max(sizes) > 1, sizes
    assert max(sizes) <= 16, sizes  # max_batch_size
    health = embedder.health.remote().result(timeout_s=30)
    assert health["batching"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.05}


def test_reconfigure_changes_batching_without_restart(serve_instance, embedder):
    # Serve calls ``reconfigure`` with a new user_config on a live replica (a config file's
    # redeploy); the same method called through the handle proves the replica's batcher takes
    # the new settings in place: its history of model calls survives, and later batches obey.
    calls_before = embedder.health.remote().result(timeout_s=30)["encode_sizes"]
    assert calls_before  # the earlier tests' calls
    embedder.reconfigure.remote({"max_batch_size": 4, "batch_wait_timeout_s": 0.05}).result(
        timeout_s=30)
    health = embedder.health.remote().result(timeout_s=30)
    assert health["batching"] == {"max_batch_size": 4, "batch_wait_timeout_s": 0.05}
    assert health["encode_sizes"] == calls_before  # the same replica

    async def burst():
        return await asyncio.gather(*(embedder.embed.remote([f"text {i}"], "query")
                                      for i in range(12)))

    asyncio.run(burst())
    after = embedder.health.remote().result(timeout_s=30)["encode_sizes"][len(calls_before):]
    assert sum(after) == 12 and max(after) <= 4
    embedder.reconfigure.remote({"max_batch_size": 16, "batch_wait_timeout_s": 0.05}).result(
        timeout_s=30)


def test_bad_kind_is_a_typed_client_error(embedder):
    from ragserve.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError):
        embedder.embed.remote(["x"], "document").result(timeout_s=30)
