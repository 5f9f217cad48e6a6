"""Reranker deployment: a cross-encoder when its model loads, else a weight-free fallback."""

from __future__ import annotations

import asyncio

from ray import serve

from ragserve.config import BatchingConfig, RerankerConfig
from ragserve.reranking.factory import load_scorer, order_by_scores
from ragserve.schemas import RerankResult, ScoredChunk

__all__ = ["RerankerDeployment"]


class RerankerDeployment:
    """Batches requests: the (query, passage) pairs of several requests go through the model
    in one call. The active scorer is named in ``health()`` and in every ``RerankResult``."""

    def __init__(self, config: RerankerConfig, scorer_loader=load_scorer):
        self.config = RerankerConfig.model_validate(config)
        self.scorer, self.fallback_reason = scorer_loader(self.config)
        self._apply_batching(self.config.batching)

    def reconfigure(self, user_config: dict) -> None:
        self._apply_batching(BatchingConfig.model_validate(user_config or {}))

    def _apply_batching(self, batching: BatchingConfig) -> None:
        self.batching = batching
        self._score_batch.set_max_batch_size(batching.max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    async def rerank(self, query: str, chunks: list[ScoredChunk], top_n: int) -> RerankResult:
        if not chunks:
            return RerankResult(chunks=[], backend=self.scorer.name)
        scores = await self._score_batch((query, chunks))
        return RerankResult(chunks=order_by_scores(chunks, scores, top_n), backend=self.scorer.name)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _score_batch(self, groups: list[tuple[str, list[ScoredChunk]]]) -> list[list[float]]:
        return await asyncio.to_thread(self.scorer.score_many, groups)

    async def health(self) -> dict:
        return {
            "backend": self.scorer.name,
            "fallback_reason": self.fallback_reason,
            "batching": self.batching.model_dump(),
        }

    async def check_health(self) -> None:
        return None
