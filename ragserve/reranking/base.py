"""The reranker role."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ragserve.schemas import RerankResult, ScoredChunk

__all__ = ["Reranker", "Scorer"]


@runtime_checkable
class Scorer(Protocol):
    """Scores (query, passage) pairs; higher is more relevant. Synchronous and CPU/GPU bound:
    the deployment runs it off the event loop and batches across requests."""

    name: str

    def score(self, query: str, passages: list[ScoredChunk]) -> list[float]: ...


@runtime_checkable
class Reranker(Protocol):
    async def rerank(self, query: str, chunks: list[ScoredChunk], top_n: int) -> RerankResult: ...
