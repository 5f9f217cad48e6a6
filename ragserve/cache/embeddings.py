"""The embedding cache tier: an ``Embedder`` around another ``Embedder``.

One ``mget`` per call looks every text up; only the misses (each distinct text once) reach the
wrapped embedder; hits and fresh vectors are reassembled in input order, and the fresh ones are
written back with one pipelined ``mset``. Vectors are stored as little-endian float32 bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ragserve.cache.keys import KeySpace
from ragserve.cache.stats import CacheCounters, record
from ragserve.cache.store import GuardedStore
from ragserve.schemas import EmbedderInfo, InputKind

__all__ = ["CachedEmbedder", "encode_vector", "decode_vector"]


def encode_vector(vector: list[float]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def decode_vector(data: bytes, dimension: int | None = None) -> list[float] | None:
    if len(data) % 4 or (dimension is not None and len(data) != 4 * dimension):
        return None  # not a vector of this model: treat as a miss
    return np.frombuffer(data, dtype="<f4").astype(float).tolist()


class CachedEmbedder:
    def __init__(self, inner: Any, store: GuardedStore, *, ttl_s: float, keys: KeySpace,
                 counters: CacheCounters) -> None:
        self.inner = inner
        self.store = store
        self.ttl_s = ttl_s
        self.keys = keys
        self.counters = counters
        self._info: EmbedderInfo | None = None

    async def info(self) -> EmbedderInfo:
        # The key includes the model id (and its quantisation), so a model change never reads
        # old vectors.
        self._info = await self.inner.info()
        return self._info

    async def health(self) -> dict:
        return await self.inner.health()

    async def embed(self, texts: list[str], kind: InputKind = "passage") -> list[list[float]]:
        if not texts:
            return []
        info = self._info or await self.info()
        keys = [self.keys.embedding(info.vectors_id, kind, t) for t in texts]
        found = await self.store.mget(keys)
        vectors: list[list[float] | None] = [
            decode_vector(v, info.dimension) if v is not None else None for v in found
        ]
        missing: dict[str, int] = {}  # key → position of the first text with that key
        for i, (key, vec) in enumerate(zip(keys, vectors)):
            if vec is None and key not in missing:
                missing[key] = i
        hits = sum(v is not None for v in vectors)
        record(self.counters, "embeddings", hits, len(texts) - hits)
        if missing:
            fresh = await self.inner.embed([texts[i] for i in missing.values()], kind)
            by_key = dict(zip(missing, fresh))
            vectors = [v if v is not None else by_key[k] for k, v in zip(keys, vectors)]
            await self.store.mset({k: encode_vector(v) for k, v in by_key.items()}, self.ttl_s)
        return vectors  # type: ignore[return-value]
