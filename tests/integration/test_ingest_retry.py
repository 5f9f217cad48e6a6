"""Ingestion is safe to retry: a run of batches that fails half-way is re-sent whole, and the
index ends with every chunk exactly once (real embedder, real Qdrant local mode)."""

from __future__ import annotations

import pytest

from ragserve.config import EmbedderConfig, IngressConfig, RetrieverConfig
from ragserve.embedding import SentenceTransformerEmbedder
from ragserve.embedding.local import LocalEmbedder
from ragserve.errors import StageUnavailableError
from ragserve.pipeline import RAGPipeline, StageSet
from ragserve.reranking.lexical import RetrievalOrderScorer
from ragserve.reranking.local import ScorerReranker
from ragserve.retrieval.qdrant import QdrantRetriever
from ragserve.schemas import IngestRequest

pytestmark = pytest.mark.slow


class FlakyEmbedder:
    """The real model, made to fail from the ``fail_from``-th call on (an embedder outage)."""

    def __init__(self, fail_from: int | None) -> None:
        encoder = SentenceTransformerEmbedder(EmbedderConfig(torch_threads=1))
        encoder.warm_up()
        self.backend = LocalEmbedder(encoder)
        self.fail_from = fail_from
        self.calls = 0

    async def embed(self, texts, kind="passage"):
        self.calls += 1
        if self.fail_from is not None and self.calls >= self.fail_from:
            raise StageUnavailableError("embedder replica died")
        return await self.backend.embed(texts, kind)

    async def info(self):
        return await self.backend.info()

    async def health(self):
        return await self.backend.health()


async def test_a_half_failed_ingest_is_resent_with_nothing_duplicated_or_lost(tmp_path):
    retriever = QdrantRetriever(RetrieverConfig(path=str(tmp_path / "q"), collection="retry"))
    await retriever.warm_up()
    embedder = FlakyEmbedder(fail_from=3)
    pipe = RAGPipeline(StageSet(embedder=embedder, retriever=retriever,
                                reranker=ScorerReranker(RetrievalOrderScorer())),
                       config=IngressConfig(stage_timeout_s=30))
    await pipe.startup()
    docs = [{"id": f"doc-{i}", "text": f"Document {i} is about topic {i % 7}. " * 5}
            for i in range(30)]
    batches = [docs[i:i + 10] for i in range(0, 30, 10)]
    sent = 0
    with pytest.raises(StageUnavailableError):
        for batch in batches:  # the client's run: batch 3 meets the outage
            await pipe.ingest(IngestRequest(documents=batch))
            sent += 1
    assert sent == 2 and await retriever.count() == 20  # the failed batch wrote nothing
    embedder.fail_from = None  # the embedder is back: the client re-sends everything
    statuses = []
    for batch in batches:
        statuses += [d.status for d in (await pipe.ingest(IngestRequest(documents=batch))).documents]
    assert statuses == ["unchanged"] * 20 + ["created"] * 10
    assert await retriever.count() == 30  # every chunk exactly once
    again = await pipe.ingest(IngestRequest(documents=docs))
    assert again.chunks_embedded == 0 and await retriever.count() == 30
    await retriever.aclose()
