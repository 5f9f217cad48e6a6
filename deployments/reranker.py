"""Reranker deployment: a cross-encoder when its model loads, else a weight-free fallback."""

from __future__ import annotations

import asyncio

from deployments._batching import BatchingMixin
from ragserve.config import RerankerConfig
from ragserve.ordering import order_by_scores
from ragserve.reranking.factory import load_scorer
from ragserve.schemas import RerankResult, ScoredChunk

__all__ = ["RerankerDeployment"]


class RerankerDeployment(BatchingMixin):
    """Serves the ``Reranker`` role. Batches requests: the (query, passage) pairs of several
    requests go through the model in one call. The active scorer is named in ``health()`` and
    in every ``RerankResult``."""

    def __init__(self, config: RerankerConfig, scorer_loader=load_scorer):
        self.config = RerankerConfig.model_validate(config)
        self.scorer, self.fallback_reason = scorer_loader(self.config)
        self._init_batching(self._score_groups, self.config.batching)

    async def rerank(self, query: str, chunks: list[ScoredChunk], top_n: int) -> RerankResult:
        if not chunks:
            return RerankResult(chunks=[], backend=self.scorer.name)
        scores = await self._batch((query, chunks))
        return RerankResult(chunks=order_by_scores(chunks, scores, top_n), backend=self.scorer.name)

    async def _score_groups(self, groups: list[tuple[str, list[ScoredChunk]]]) -> list[list[float]]:
        return await asyncio.to_thread(self.scorer.score_many, groups)

    async def health(self) -> dict:
        return {
            "backend": self.scorer.name,
            "fallback_reason": self.fallback_reason,
            "batching": self.batching.model_dump(),
        }
