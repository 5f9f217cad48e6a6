"""The embedder role."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ragserve.schemas import EmbedderInfo, InputKind

__all__ = ["Embedder"]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors. Order is preserved; over-long texts are truncated."""

    async def embed(self, texts: list[str], kind: InputKind = "passage") -> list[list[float]]: ...

    async def info(self) -> EmbedderInfo: ...
