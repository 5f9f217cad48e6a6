"""What the Qdrant Edge backend adds to the retriever contract: choosing it by config, its
folder (persisted across restarts, checked against the embedder, locked to one opener), its
HNSW index and quantization, and the translation of the shared filters."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qdrant_client import models as qm

from deployments.retriever import RetrieverDeployment
from ragserve.config import EdgeIndexConfig, RetrieverConfig
from ragserve.errors import ConfigurationError, StageUnavailableError
from ragserve.retrieval import QdrantRetriever, retriever_class
from ragserve.retrieval.payload import ANALYZER_KEY
from tests.conftest import construct
from tests.contracts.retriever import CHUNKS, CORPUS, EMBEDDER, VECTORS, basis, make_chunks

pytest.importorskip("qdrant_edge")

from ragserve.retrieval.edge import EdgeRetriever, _edge_filter  # noqa: E402


def edge_config(tmp_path, **edge) -> RetrieverConfig:
    return RetrieverConfig(backend="edge", collection="t",
                           edge=EdgeIndexConfig(path=str(tmp_path / "edge"), **edge))


@pytest.fixture
async def corpus(tmp_path):
    r = EdgeRetriever(edge_config(tmp_path))
    await r.warm_up()
    await r.ensure_collection(EMBEDDER)
    await r.replace_documents([(d, CHUNKS[d], VECTORS[d]) for d in CORPUS])
    yield r
    await r.aclose()


def test_config_picks_the_backend(tmp_path):
    assert retriever_class(RetrieverConfig()) is QdrantRetriever
    assert retriever_class(edge_config(tmp_path)) is EdgeRetriever
    with pytest.raises(ValueError):
        RetrieverConfig(backend="faiss")
    with pytest.raises(ValueError):
        EdgeIndexConfig(quantization="int4")


@pytest.mark.filterwarnings("ignore:coroutine 'RetrieverDeployment.__del__' was never awaited")
async def test_the_deployment_serves_the_configured_backend(tmp_path):
    dep = await construct(RetrieverDeployment, edge_config(tmp_path))
    assert isinstance(dep.backend, EdgeRetriever)
    await dep.ensure_collection(EMBEDDER)
    await dep.replace_documents([("reef", CHUNKS["reef"], VECTORS["reef"])])
    assert (await dep.health())["backend"] == "qdrant-edge"
    await dep.__del__()


async def test_the_collection_survives_a_restart_and_checks_the_embedder(tmp_path, corpus):
    await corpus.aclose()
    again = EdgeRetriever(edge_config(tmp_path))
    await again.warm_up()
    assert await again.count() == 5  # opened at warm-up, before ensure_collection
    with pytest.raises(ConfigurationError, match="another-model"):
        await again.ensure_collection(EMBEDDER.model_copy(update={"model": "another-model"}))
    await again.ensure_collection(EMBEDDER)
    hits = await again.search(basis(1), 1, query_text="coral reefs", mode="hybrid")
    assert hits[0].doc_id == "reef"
    await again.aclose()


async def test_a_collection_analysed_otherwise_is_refused(tmp_path, corpus):
    await corpus.aclose()
    meta = json.loads((tmp_path / "edge" / "t" / "collection.json").read_text())
    assert meta[ANALYZER_KEY] == corpus.encoder.analyzer
    meta[ANALYZER_KEY] = "some-older-analysis"
    (tmp_path / "edge" / "t" / "collection.json").write_text(json.dumps(meta))
    again = EdgeRetriever(edge_config(tmp_path))
    await again.warm_up()
    with pytest.raises(ConfigurationError, match="some-older-analysis"):
        await again.ensure_collection(EMBEDDER)
    await again.aclose()


async def test_a_second_opener_of_the_folder_is_refused(tmp_path, corpus):
    second = EdgeRetriever(corpus.config)
    with pytest.raises(ConfigurationError, match="another process"):
        await second.warm_up()


async def test_health_reports_points_and_segments(tmp_path, corpus):
    health = await corpus.health()
    assert health["backend"] == "qdrant-edge" and health["points"] == 5
    assert health["segments"] >= 1 and health["collection_exists"] is True
    fresh = EdgeRetriever(edge_config(tmp_path / "other"))
    await fresh.warm_up()
    assert (await fresh.health())["collection_exists"] is False
    await fresh.aclose()
    with pytest.raises(StageUnavailableError):
        await fresh.health()


@pytest.mark.parametrize("quantization", ["none", "int8"])
async def test_hnsw_search_matches_exact_search(tmp_path, quantization):
    """Points indexed by the optimizers (HNSW, optionally int8) rank as brute force does."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 32))
    vectors = centers[rng.integers(0, 20, 3000)] + rng.normal(scale=0.3, size=(3000, 32))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    info = EMBEDDER.model_copy(update={"dimension": 32})
    r = EdgeRetriever(edge_config(tmp_path, quantization=quantization, hnsw_ef=64,
                                  full_scan_threshold_kb=0, optimize_after_write=False))
    await r.warm_up()
    await r.ensure_collection(info)
    docs = []
    for d in range(300):
        chunks = make_chunks(f"d{d}", [f"text {d} {i}" for i in range(10)])
        docs.append((f"d{d}", chunks, vectors[d * 10:(d + 1) * 10].tolist()))
    await r.replace_documents(docs)
    await r.optimize()
    ids = [c.chunk_id for _, chunks, _ in docs for c in chunks]
    found = 0
    for q in rng.normal(size=(20, 32)):
        q /= np.linalg.norm(q)
        exact = {ids[i] for i in np.argsort(-(vectors @ q))[:10]}
        hits = await r.search(q.tolist(), 10, mode="dense")
        found += len(exact & {h.chunk_id for h in hits})
    assert found / 200 >= 0.95
    assert await r.count() == 3000
    await r.aclose()


async def test_optimize_after_write_keeps_results(tmp_path):
    r = EdgeRetriever(edge_config(tmp_path, optimize_after_write=True))
    await r.warm_up()
    await r.ensure_collection(EMBEDDER)
    await r.replace_documents([(d, CHUNKS[d], VECTORS[d]) for d in CORPUS])
    assert await r.optimize() in (True, False)
    hits = await r.search(basis(2), 1, query_text="compiler", mode="sparse")
    assert hits[0].doc_id == "compiler"
    await r.aclose()


def test_filters_translate_and_unknown_conditions_are_refused():
    f = qm.Filter(must=[qm.FieldCondition(key="a", match=qm.MatchValue(value=True)),
                        qm.Filter(should=[qm.IsEmptyCondition(is_empty=qm.PayloadField(key="b"))])],
                  must_not=[qm.HasIdCondition(has_id=["00000000-0000-0000-0000-000000000001"])])
    assert _edge_filter(f) is not None and _edge_filter(None) is None
    with pytest.raises(TypeError):
        _edge_filter(qm.Filter(must=[qm.FieldCondition(key="a", range=qm.Range(gte=1))]))
