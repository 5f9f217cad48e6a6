"""Sentence-transformers embedder backend.

Split the Infinity way: ``_prepare`` (prefix, truncate, sort by length), the model call, and
restoring the caller's order. Sorting a batch by length keeps padding, and so wasted compute,
small when short queries and long passages share a batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import numpy as np

from ragserve.config import EmbedderConfig
from ragserve.models import resolve_model
from ragserve.schemas import EmbedderInfo, InputKind

__all__ = ["SentenceTransformerEmbedder", "pick_device"]

log = logging.getLogger("ragserve.embedder")


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is visible")
    return requested


class SentenceTransformerEmbedder:
    """Embeds texts with a sentence-transformers model, any name or path.

    ``__init__`` only stores the config; ``warm_up()`` loads the model (seconds, CPU-bound).
    ``encode`` is synchronous and thread-safe (one model call at a time); ``embed`` runs it off
    the event loop.
    """

    def __init__(self, config: EmbedderConfig) -> None:
        self.config = config
        self._model = None
        self._device = "unloaded"
        self._dtype = "unloaded"
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"sentence-transformers:{self.config.model}"

    def warm_up(self) -> None:
        if self._model is not None:
            return
        import torch
        from sentence_transformers import SentenceTransformer

        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        device = pick_device(self.config.device)
        dtype = self.config.dtype
        if dtype == "auto":
            dtype = "float16" if device == "cuda" else "float32"
        resolved = resolve_model(self.config.model)
        model = SentenceTransformer(
            resolved.path,
            device=device,
            model_kwargs={"dtype": getattr(torch, dtype)},
            local_files_only=resolved.source != "hub",
        )
        if self.config.max_seq_length:
            model.max_seq_length = self.config.max_seq_length
        model.eval()
        self._model, self._device, self._dtype = model, device, dtype
        self._source = resolved.source
        log.info("embedder loaded: %s from %s on %s/%s", self.config.model, resolved.source, device, dtype)

    @property
    def encode_batch_size(self) -> int:
        if self.config.encode_batch_size is not None:
            return self.config.encode_batch_size
        return 128 if self._device == "cuda" else 16

    @property
    def model(self):
        if self._model is None:
            raise RuntimeError("embedder not warmed up")
        return self._model

    def info(self) -> EmbedderInfo:
        model = self.model
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else model.get_sentence_embedding_dimension()
        return EmbedderInfo(
            model=self.config.model,
            dimension=int(dim),
            device=self._device,
            dtype=self._dtype,
            max_seq_length=model.max_seq_length,
        )

    def _prepare(self, texts: list[str], kinds: list[InputKind]) -> list[str]:
        prefix = {"query": self.config.query_prefix, "passage": self.config.passage_prefix}
        limit = self.config.max_input_chars
        return [prefix[k] + t[:limit] for t, k in zip(texts, kinds)]

    def encode(self, texts: list[str], kinds: list[InputKind]) -> np.ndarray:
        """Vectors (float32, one row per text, in input order)."""
        if not texts:
            return np.zeros((0, self.info().dimension), dtype=np.float32)
        prepared = self._prepare(texts, kinds)
        order = sorted(range(len(prepared)), key=lambda i: len(prepared[i]), reverse=True)
        with self._lock:
            vectors = self.model.encode(
                [prepared[i] for i in order],
                batch_size=self.encode_batch_size,
                normalize_embeddings=self.config.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        out = np.empty_like(vectors, dtype=np.float32)
        out[order] = vectors
        return out

    async def embed(self, texts: list[str], kind: InputKind = "passage") -> list[list[float]]:
        vectors = await asyncio.to_thread(self.encode, texts, [kind] * len(texts))
        return vectors.tolist()

    def health(self) -> dict:
        info = self.info()
        return {"backend": self.name, "source": getattr(self, "_source", None), **info.model_dump()}
