"""An in-process reranker around a scorer (evaluation, notebooks, tests without Serve).

The Serve deployment batches across requests instead; both order with ``order_by_scores``.
"""

from __future__ import annotations

import asyncio

from ragserve.reranking.base import Scorer
from ragserve.ordering import order_by_scores
from ragserve.schemas import RerankResult, ScoredChunk

__all__ = ["ScorerReranker"]


class ScorerReranker:
    def __init__(self, scorer: Scorer, fallback_reason: str | None = None) -> None:
        self.scorer = scorer
        self.fallback_reason = fallback_reason

    async def rerank(self, query: str, chunks: list[ScoredChunk], top_n: int) -> RerankResult:
        if not chunks:
            return RerankResult(chunks=[], backend=self.scorer.name)
        scores = await asyncio.to_thread(self.scorer.score, query, chunks)
        return RerankResult(chunks=order_by_scores(chunks, scores, top_n), backend=self.scorer.name)

    async def health(self) -> dict:
        return {"backend": self.scorer.name, "fallback_reason": self.fallback_reason}
