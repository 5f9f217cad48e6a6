"""Embedder deployment: dynamic batching across requests with ``@serve.batch``."""

from __future__ import annotations

import asyncio

from ray import serve

from ragserve.config import BatchingConfig, EmbedderConfig
from ragserve.embedding import SentenceTransformerEmbedder
from ragserve.errors import InvalidRequestError
from ragserve.schemas import EmbedderInfo, InputKind

__all__ = ["EmbedderDeployment"]

MAX_TEXTS_PER_CALL = 4096


class EmbedderDeployment:
    """Each text is one batch item, so single-query calls from many requests coalesce into one
    model call, and a large ingestion call fills whole batches by itself. ``max_batch_size`` and
    ``batch_wait_timeout_s`` come from ``user_config`` and change without a restart. Up to one
    batch more than the backend has workers (``EmbedderConfig.workers``) runs at once."""

    def __init__(self, config: EmbedderConfig, backend_cls: type = SentenceTransformerEmbedder):
        self.config = EmbedderConfig.model_validate(config)
        self.backend = backend_cls(self.config)
        self.backend.warm_up()
        # Built per replica: max_concurrent_batches is fixed when the batcher is made, and it
        # follows the worker count the backend chose for this replica's device. One batch more
        # than workers: the next batch forms while the others run, so no worker waits for it.
        batching = self.config.batching
        self._embed_batch = serve.batch(
            max_batch_size=batching.max_batch_size,
            batch_wait_timeout_s=batching.batch_wait_timeout_s,
            max_concurrent_batches=getattr(self.backend, "workers", 1) + 1,
        )(self._encode_items)
        self._apply_batching(batching)

    def reconfigure(self, user_config: dict) -> None:
        self._apply_batching(BatchingConfig.model_validate(user_config or {}))

    def _apply_batching(self, batching: BatchingConfig) -> None:
        self.batching = batching
        self._embed_batch.set_max_batch_size(batching.max_batch_size)
        self._embed_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    async def embed(self, texts: list[str], kind: InputKind = "passage") -> list[list[float]]:
        if kind not in ("query", "passage"):
            raise InvalidRequestError(f"kind must be 'query' or 'passage', not {kind!r}")
        if len(texts) > MAX_TEXTS_PER_CALL:
            raise InvalidRequestError(f"at most {MAX_TEXTS_PER_CALL} texts per call")
        if not all(isinstance(t, str) for t in texts):
            raise InvalidRequestError("texts must be strings")
        return list(await asyncio.gather(*(self._embed_batch((t, kind)) for t in texts)))

    async def _encode_items(self, items: list[tuple[str, InputKind]]) -> list[list[float]]:
        texts = [t for t, _ in items]
        kinds = [k for _, k in items]
        vectors = await asyncio.to_thread(self.backend.encode, texts, kinds)
        return vectors.tolist()

    async def info(self) -> EmbedderInfo:
        return self.backend.info()

    async def health(self) -> dict:
        return {**self.backend.health(), "batching": self.batching.model_dump()}

    async def check_health(self) -> None:
        self.backend.info()  # raises if the model is gone
