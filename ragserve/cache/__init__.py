"""Cache tiers as layers around the stages, composed from ``CacheConfig``.

    layer = CacheLayer.from_config(config.cache)
    embedder = layer.embedder(embedder)          # the embedding tier (an Embedder)
    pipeline = layer.pipeline(RAGPipeline(StageSet(embedder=embedder, ...)), fingerprint=...)

Without ``redis_url`` every tier lives in the process (``MemoryStore``); with it, in Redis, and
the session tier keeps an in-memory copy. The stages themselves know nothing of caching.
"""

from __future__ import annotations

from typing import Any

from ragserve.cache.embeddings import CachedEmbedder
from ragserve.cache.keys import KeySpace
from ragserve.cache.pipeline import PROMPT_VERSION, CachedPipeline
from ragserve.cache.sessions import SessionStore
from ragserve.cache.stats import CacheCounters
from ragserve.cache.store import GuardedStore, KVStore, MemoryStore, RedisStore
from ragserve.config import CacheConfig
from ragserve.security.config import redis_url_with_password

__all__ = ["CacheLayer", "CachedEmbedder", "CachedPipeline", "PROMPT_VERSION"]


class CacheLayer:
    def __init__(self, config: CacheConfig, store: KVStore) -> None:
        self.config = config
        self.store = GuardedStore(
            store,
            timeout_s=config.timeout_s * 2,  # the client's own socket timeout fires first
            breaker=config.breaker,
        )
        self.keys = KeySpace(config.key_prefix)
        self.counters = CacheCounters()
        s = config.sessions
        self.sessions = SessionStore(
            ttl_s=s.ttl_s, max_sessions=s.max_sessions, max_turns=s.max_turns, keys=self.keys,
            counters=self.counters, backing=self.store if store.backend != "memory" else None,
        ) if s.enabled else None

    @classmethod
    def from_config(cls, config: CacheConfig) -> "CacheLayer":
        if config.redis_url is not None:
            # The password, when given apart (a Secret), is read here, at start-up.
            url = redis_url_with_password(config.redis_url, config.redis_password)
            store: KVStore = RedisStore(url,
                                    socket_timeout_s=config.timeout_s)
        else:
            store = MemoryStore(max_entries=config.memory_max_entries)
        return cls(config, store)

    def embedder(self, inner: Any) -> Any:
        if not self.config.embeddings.enabled:
            return inner
        return CachedEmbedder(inner, self.store, ttl_s=self.config.embeddings.ttl_s,
                              keys=self.keys, counters=self.counters)

    def pipeline(self, inner: Any, *, fingerprint: str = "") -> CachedPipeline:
        return CachedPipeline(inner, config=self.config, store=self.store, keys=self.keys,
                              counters=self.counters, sessions=self.sessions,
                              fingerprint=fingerprint)

    async def aclose(self) -> None:
        await self.store.aclose()
