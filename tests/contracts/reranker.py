"""What every ``Reranker`` does, as tests that each implementation runs.

A concrete test class inherits ``RerankerContract`` and supplies a ``reranker`` fixture: a
ready ``Reranker`` (``ragserve/reranking/base.py``). Relevance is not checked here (a random
cross-encoder passes): the contract is the shape of what comes back, which the pipeline relies
on whatever scored it.
"""

from __future__ import annotations

import math

import pytest

from ragserve.reranking import Reranker
from ragserve.schemas import RerankResult, ScoredChunk

__all__ = ["RerankerContract", "candidates"]

QUERY = "How do coral reefs shelter marine species?"
TEXTS = [
    "Volcanic eruptions eject magma and ash into the atmosphere.",
    "Coral reefs shelter a quarter of marine species.",
    "A compiler translates source code into machine instructions.",
    "Reef fish hide from predators among the corals.",
    "Glaciers carve valleys while flowing downhill.",
]


def candidates(texts: list[str], scores: list[float] | None = None) -> list[ScoredChunk]:
    """Retriever output: best first, ``retrieval_score == score``."""
    scores = scores if scores is not None else [1.0 - i / 10 for i in range(len(texts))]
    return [ScoredChunk(chunk_id=f"00000000-0000-0000-0000-{i:012d}", doc_id=f"doc-{i}",
                        chunk_index=0, text=t, metadata={"n": i}, score=s, retrieval_score=s)
            for i, (t, s) in enumerate(zip(texts, scores))]


def _fields(chunk: ScoredChunk) -> dict:
    return chunk.model_dump(exclude={"score", "retrieval_score"})


class RerankerContract:
    """The ``Reranker`` protocol's promises, as tests."""

    async def test_satisfies_the_protocol(self, reranker):
        assert isinstance(reranker, Reranker)

    @pytest.mark.parametrize("top_n", [1, 2, len(TEXTS), len(TEXTS) + 3])
    async def test_keeps_the_best_top_n_of_the_given_chunks(self, reranker, top_n):
        chunks = candidates(TEXTS)
        result = await reranker.rerank(QUERY, chunks, top_n)
        assert isinstance(result, RerankResult)
        assert len(result.chunks) == min(top_n, len(chunks))
        ids = [c.chunk_id for c in result.chunks]
        assert len(set(ids)) == len(ids)  # a subset, no chunk twice
        given = {c.chunk_id: c for c in chunks}
        for c in result.chunks:
            assert _fields(c) == _fields(given[c.chunk_id])  # the chunk itself is untouched
            assert isinstance(c.score, float) and math.isfinite(c.score)
        scores = [c.score for c in result.chunks]
        assert scores == sorted(scores, reverse=True)  # best first, by the score it set

    async def test_a_shorter_top_n_is_a_prefix_of_a_longer_one(self, reranker):
        chunks = candidates(TEXTS)
        full = await reranker.rerank(QUERY, chunks, len(chunks))
        top = await reranker.rerank(QUERY, chunks, 2)
        assert [c.chunk_id for c in top.chunks] == [c.chunk_id for c in full.chunks[:2]]

    async def test_the_retrieval_score_is_kept(self, reranker):
        chunks = candidates(TEXTS)
        chunks[2] = chunks[2].model_copy(update={"retrieval_score": None})  # retriever left it unset
        given = {c.chunk_id: c for c in chunks}
        result = await reranker.rerank(QUERY, chunks, len(chunks))
        for c in result.chunks:
            before = given[c.chunk_id]
            # Unset means the chunk's score was the retriever's: it moves into retrieval_score.
            want = before.retrieval_score if before.retrieval_score is not None else before.score
            assert c.retrieval_score == want

    async def test_the_callers_chunks_are_not_modified(self, reranker):
        chunks = candidates(TEXTS)
        snapshot = [c.model_copy(deep=True) for c in chunks]
        await reranker.rerank(QUERY, chunks, 3)
        assert chunks == snapshot

    async def test_the_result_names_the_backend_health_names(self, reranker):
        result = await reranker.rerank(QUERY, candidates(TEXTS), 2)
        assert isinstance(result.backend, str) and result.backend
        assert result.backend == (await reranker.health())["backend"]

    async def test_no_chunks_is_an_empty_result(self, reranker):
        result = await reranker.rerank(QUERY, [], 5)
        assert isinstance(result, RerankResult) and result.chunks == []
        assert isinstance(result.backend, str) and result.backend

    async def test_ties_keep_the_given_order(self, reranker):
        # Identical text and retrieval score: every scorer must give them equal scores.
        same = "Coral reefs shelter a quarter of marine species."
        chunks = candidates([same] * 4, scores=[0.5] * 4)
        result = await reranker.rerank(QUERY, chunks, 4)
        assert [c.chunk_id for c in result.chunks] == [c.chunk_id for c in chunks]
        mixed = candidates([same, "Glaciers carve valleys.", same, same],
                           scores=[0.5, 0.5, 0.5, 0.5])
        result = await reranker.rerank(QUERY, mixed, 4)
        tied = [c.chunk_id for c in result.chunks if c.text == same]
        assert tied == [c.chunk_id for c in mixed if c.text == same]

    async def test_health_is_a_dict_naming_the_backend(self, reranker):
        health = await reranker.health()
        assert isinstance(health, dict)
        assert isinstance(health["backend"], str) and health["backend"]
