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


@pytest.fixture(scope="module")
def embedder(serve_instance):
    # @serve.batch needs a replica context (it fails outside Serve), so this runs a replica.
    dep = serve.deployment(EmbedderDeployment, name="Embedder").options(
        max_ongoing_requests=64,
        user_config={"max_batch_size": 16, "batch_wait_timeout_s": 0.05},
        ray_actor_options={"num_cpus": 0.5},
    )
    handle = serve.run(dep.bind(EmbedderConfig(torch_threads=1)), name=APP, route_prefix=None)
    yield handle
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
    async def burst():
        calls = [embedder.embed.remote([f"query number {i}"], "query") for i in range(24)]
        return await asyncio.gather(*calls)

    results = asyncio.run(burst())
    assert len(results) == 24 and all(len(r[0]) == 384 for r in results)
    health = embedder.health.remote().result(timeout_s=30)
    assert health["batching"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.05}


def test_reconfigure_changes_batching_without_restart(serve_instance, embedder):
    info_before = embedder.info.remote().result(timeout_s=30)
    dep = serve.deployment(EmbedderDeployment, name="Embedder").options(
        max_ongoing_requests=64,
        user_config={"max_batch_size": 4, "batch_wait_timeout_s": 0.0},
        ray_actor_options={"num_cpus": 0.5},
    )
    handle = serve.run(dep.bind(EmbedderConfig(torch_threads=1)), name=APP, route_prefix=None)
    health = handle.health.remote().result(timeout_s=30)
    assert health["batching"] == {"max_batch_size": 4, "batch_wait_timeout_s": 0.0}
    assert handle.info.remote().result(timeout_s=30) == info_before


def test_bad_kind_is_a_typed_client_error(embedder):
    from ragserve.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError):
        embedder.embed.remote(["x"], "document").result(timeout_s=30)
