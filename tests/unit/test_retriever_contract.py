"""The retriever contract (``tests/contracts/retriever.py``), run by every implementation:
Qdrant in embedded local mode, with and without its in-memory lexical mirror, Qdrant Edge in
process (plain and int8-quantized), and the in-memory fake the other unit tests use."""

from __future__ import annotations

import pytest

from ragserve.config import EdgeIndexConfig, RetrieverConfig
from ragserve.retrieval import QdrantRetriever, retriever_class
from tests.contracts.retriever import RetrieverContract
from tests.fakes import MemoryRetriever


class TestQdrantLocalWithLexicalMirror(RetrieverContract):
    @pytest.fixture
    async def retriever(self, tmp_path):
        r = QdrantRetriever(RetrieverConfig(path=str(tmp_path / "qdrant"), collection="contract",
                                            local_sparse_index=True))
        await r.warm_up()
        yield r
        await r.aclose()

    async def test_the_mirror_is_in_use(self, corpus):
        assert corpus._mirror is not None and len(corpus._mirror) == 5


class TestQdrantLocalWithoutLexicalMirror(RetrieverContract):
    @pytest.fixture
    async def retriever(self, tmp_path):
        r = QdrantRetriever(RetrieverConfig(path=str(tmp_path / "qdrant"), collection="contract",
                                            local_sparse_index=False))
        await r.warm_up()
        yield r
        await r.aclose()

    async def test_the_mirror_is_not_in_use(self, corpus):
        assert corpus._mirror is None


class TestMemoryRetriever(RetrieverContract):
    @pytest.fixture
    async def retriever(self):
        r = MemoryRetriever()
        await r.warm_up()
        yield r
        await r.aclose()


class TestQdrantEdge(RetrieverContract):
    @pytest.fixture
    async def retriever(self, tmp_path):
        pytest.importorskip("qdrant_edge")
        config = RetrieverConfig(backend="edge", collection="contract",
                                 edge=EdgeIndexConfig(path=str(tmp_path / "edge")))
        r = retriever_class(config)(config)
        await r.warm_up()
        yield r
        await r.aclose()


class TestQdrantEdgeInt8(RetrieverContract):
    """int8 quantization with HNSW built on every write (a 0 KB indexing threshold would be
    ignored below Edge's minimum segment size, so the exact-search fallback is off too)."""

    @pytest.fixture
    async def retriever(self, tmp_path):
        pytest.importorskip("qdrant_edge")
        config = RetrieverConfig(backend="edge", collection="contract", fusion="rrf",
                                 edge=EdgeIndexConfig(path=str(tmp_path / "edge"),
                                                      quantization="int8",
                                                      full_scan_threshold_kb=0))
        r = retriever_class(config)(config)
        await r.warm_up()
        yield r
        await r.aclose()
