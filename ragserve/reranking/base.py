"""The reranker role, and the scorer interface behind it (sync/async rule: see
``ragserve.embedding.base``)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ragserve.schemas import RerankResult, ScoredChunk

__all__ = ["Reranker", "Scorer"]


@runtime_checkable
class Scorer(Protocol):
    """Scores (query, passage) pairs; higher is more relevant. Synchronous and CPU/GPU bound:
    the stage runs it off the event loop and batches across requests."""

    name: str

    def score(self, query: str, passages: list[ScoredChunk]) -> list[float]: ...

    def score_many(self, groups: list[tuple[str, list[ScoredChunk]]]) -> list[list[float]]:
        """``score`` for several queries at once (one model call for a Serve batch)."""


@runtime_checkable
class Reranker(Protocol):
    """The stage: reorders a query's candidates and keeps the best ``top_n``.

    ``RerankResult.backend`` names the scorer that ordered them; a stage that fell back to a
    weight-free scorer says so in ``health()`` (``backend`` and ``fallback_reason``)."""

    async def rerank(self, query: str, chunks: list[ScoredChunk], top_n: int) -> RerankResult: ...

    async def health(self) -> dict: ...
