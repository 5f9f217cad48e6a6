"""Hit/miss counters per cache tier: process-wide totals (for metrics and ``/readyz``) and the
current request's own counts (returned in the response's ``cache`` metadata).

The request's counts travel in a ``ContextVar``: tasks created while serving a request (the
``asyncio.gather`` of embedding batches, say) share the same ``RequestCacheStats`` object.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Literal

from ragserve.schemas import CacheInfo

__all__ = ["TierCounters", "CacheCounters", "RequestCacheStats", "current_request", "record"]

Tier = Literal["embeddings", "queries", "sessions"]


class TierCounters:
    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0

    def as_dict(self) -> dict[str, float]:
        total = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses,
                "hit_ratio": round(self.hits / total, 4) if total else 0.0}


class CacheCounters:
    """Totals since the process started, per tier, plus de-duplicated requests."""

    def __init__(self) -> None:
        self.tiers: dict[str, TierCounters] = {
            "embeddings": TierCounters(), "queries": TierCounters(), "sessions": TierCounters()}
        self.deduplicated = 0

    def as_dict(self) -> dict:
        return {**{name: t.as_dict() for name, t in self.tiers.items()},
                "deduplicated": self.deduplicated}


class RequestCacheStats:
    def __init__(self) -> None:
        self.info = CacheInfo()


_current: ContextVar[RequestCacheStats | None] = ContextVar("ragserve_cache_stats", default=None)


def current_request() -> RequestCacheStats | None:
    return _current.get()


def begin_request() -> tuple[RequestCacheStats, object]:
    stats = RequestCacheStats()
    return stats, _current.set(stats)


def end_request(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def record(counters: CacheCounters, tier: Tier, hits: int, misses: int) -> None:
    """Count ``hits``/``misses`` in the process totals and in the current request's counts."""
    t = counters.tiers[tier]
    t.hits += hits
    t.misses += misses
    req = _current.get()
    if req is not None:
        if tier == "embeddings":
            req.info.embedding_hits += hits
            req.info.embedding_misses += misses
