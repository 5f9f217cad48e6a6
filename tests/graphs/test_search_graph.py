"""The search-only graph, and the start-up check of the index against the embedder."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from ray import serve

from graphs.rag import build_search_app
from ragserve.config import RetrieverConfig
from ragserve.retrieval.qdrant import QdrantRetriever
from ragserve.schemas import EmbedderInfo
from tests.conftest import small_app_args
from tests.corpus import DOCUMENTS, QUESTIONS

pytestmark = pytest.mark.slow


def test_search_only_graph_has_no_generator(serve_instance, tmp_path, model_cache):
    args = small_app_args(tmp_path, model_cache)
    serve.run(build_search_app(args), name="search-only", route_prefix="/searchonly")
    try:
        with httpx.Client(base_url=serve_instance + "/searchonly", timeout=60) as c:
            assert c.post("/v1/documents", json={"documents": DOCUMENTS}).status_code == 200
            hits = c.post("/v1/search", json={"query": QUESTIONS[0][0]}).json()["results"]
            assert hits[0]["doc_id"] == QUESTIONS[0][1]
            r = c.post("/v1/query", json={"query": QUESTIONS[0][0]})
            assert r.status_code == 404 and "without a generator" in r.json()["error"]["message"]
            assert set(c.get("/readyz").json()["stages"]) == {"embedder", "retriever", "reranker", "cache"}
    finally:
        serve.delete("search-only")


def test_index_built_with_another_model_fails_startup_clearly(serve_instance, tmp_path, model_cache):
    path = tmp_path / "qdrant"

    async def prebuild():
        r = QdrantRetriever(RetrieverConfig(path=str(path), collection="test"))
        await r.warm_up()
        await r.ensure_collection(EmbedderInfo(model="intfloat/e5-large-v2", dimension=1024,
                                               device="cpu", dtype="float32"))
        await r.aclose()

    asyncio.run(prebuild())
    args = small_app_args(tmp_path, model_cache)
    with pytest.raises(RuntimeError):
        serve.run(build_search_app(args), name="mismatch", route_prefix="/mismatch")
    message = serve.status().applications["mismatch"].deployments["Ingress"].message
    serve.delete("mismatch")
    assert "ConfigurationError" in message and "e5-large-v2" in message
