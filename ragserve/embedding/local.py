"""The embedder stage in process (evaluation, notebooks, tests without Serve): an ``Embedder``
over a loaded ``TextEncoder``, its model calls run off the event loop. The Serve deployment
batches across requests instead."""

from __future__ import annotations

import asyncio

from ragserve.embedding.base import TextEncoder
from ragserve.schemas import EmbedderInfo, InputKind

__all__ = ["LocalEmbedder"]


class LocalEmbedder:
    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder

    async def embed(self, texts: list[str], kind: InputKind = "passage") -> list[list[float]]:
        vectors = await asyncio.to_thread(self.encoder.encode, texts, [kind] * len(texts))
        return vectors.tolist()

    async def info(self) -> EmbedderInfo:
        return self.encoder.info()

    async def health(self) -> dict:
        return self.encoder.health()
