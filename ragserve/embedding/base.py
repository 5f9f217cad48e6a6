"""The embedder role, and the model interface behind it.

One sync/async rule holds for every role: what a stage offers across a stage boundary is
``async`` (the pipeline awaits it, locally or through a Serve handle); what a model does on the
CPU or GPU in process is plain synchronous code, which the stage runs off the event loop.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ragserve.schemas import EmbedderInfo, InputKind

__all__ = ["Embedder", "TextEncoder"]


@runtime_checkable
class Embedder(Protocol):
    """The stage: turns texts into vectors. Order is preserved; an over-long query is
    truncated, an over-long passage embedded window by window when the config says so
    (``EmbedderConfig.long_passages``).

    Served by ``deployments.embedder.EmbedderDeployment`` (batched across requests) and, in
    process, by ``ragserve.embedding.LocalEmbedder``; ``ragserve.cache.CachedEmbedder`` wraps
    either with the embedding cache."""

    async def embed(self, texts: list[str], kind: InputKind = "passage") -> list[list[float]]: ...

    async def info(self) -> EmbedderInfo:
        """The model, dimension and precision the vectors come from (the index is checked
        against it at start-up)."""

    async def health(self) -> dict:
        """Details for ``/readyz`` (``backend`` at least); raises when the model is gone."""


@runtime_checkable
class TextEncoder(Protocol):
    """A loaded embedding model (``SentenceTransformerEmbedder``): synchronous, CPU/GPU bound."""

    workers: int
    """Model calls it can run at once (the stage runs one batch more than this)."""

    def warm_up(self) -> None:
        """Load the weights once; every other method needs it done."""

    def encode(self, texts: list[str], kinds: list[InputKind]) -> np.ndarray:
        """One row per text, float32, normalised when the config says so."""

    def info(self) -> EmbedderInfo: ...

    def health(self) -> dict: ...
