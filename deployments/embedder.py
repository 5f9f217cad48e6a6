"""Embedder deployment: dynamic batching across requests with ``@serve.batch``."""

from __future__ import annotations

import asyncio

from deployments._batching import BatchingMixin
from ragserve.config import EmbedderConfig
from ragserve.embedding import SentenceTransformerEmbedder, TextEncoder
from ragserve.errors import InvalidRequestError
from ragserve.schemas import EmbedderInfo, InputKind

__all__ = ["EmbedderDeployment"]

MAX_TEXTS_PER_CALL = 4096


class EmbedderDeployment(BatchingMixin):
    """Serves the ``Embedder`` role. Each text is one batch item, so single-query calls from
    many requests coalesce into one model call, and a large ingestion call fills whole batches
    by itself. Up to one batch more than the encoder has workers (``EmbedderConfig.workers``)
    runs at once: the next batch forms while the others run, so no worker waits for it."""

    def __init__(self, config: EmbedderConfig,
                 backend_cls: type[TextEncoder] = SentenceTransformerEmbedder):
        self.config = EmbedderConfig.model_validate(config)
        self.backend: TextEncoder = backend_cls(self.config)
        self.backend.warm_up()
        self._init_batching(self._encode_items, self.config.batching,
                            max_concurrent_batches=self.backend.workers + 1)

    async def embed(self, texts: list[str], kind: InputKind = "passage") -> list[list[float]]:
        if kind not in ("query", "passage"):
            raise InvalidRequestError(f"kind must be 'query' or 'passage', not {kind!r}")
        if len(texts) > MAX_TEXTS_PER_CALL:
            raise InvalidRequestError(f"at most {MAX_TEXTS_PER_CALL} texts per call")
        if not all(isinstance(t, str) for t in texts):
            raise InvalidRequestError("texts must be strings")
        return list(await asyncio.gather(*(self._batch((t, kind)) for t in texts)))

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
