"""The one batching behaviour of the batched stages (embedder, reranker): a ``@serve.batch``
queue whose size and wait come from ``BatchingConfig`` and change at run time through the
deployment's ``user_config`` (``reconfigure``), without a restart."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from ray import serve

from deployments._metrics import recorder
from ragserve.config import BatchingConfig
from ragserve.observability import tracing

__all__ = ["BatchingMixin"]


class BatchingMixin:
    """Call ``_init_batching(handler, config, max_concurrent_batches)`` in ``__init__``; submit
    items with ``await self._batch(item)``. ``handler`` takes a list of items and returns one
    result per item."""

    batching: BatchingConfig

    def _init_batching(self, handler: Callable[[list[Any]], Awaitable[list[Any]]],
                       config: BatchingConfig, max_concurrent_batches: int = 1) -> None:
        # Built per replica: max_concurrent_batches is fixed when the batcher is made.
        stage = getattr(self, "_observed_stage", type(self).__name__.removesuffix(
            "Deployment").lower())

        async def observed(packed: list[tuple[Any, Any]]) -> list[Any]:
            # Each item travels with its caller's span context: the batch's span links to
            # every request it serves, and the batch size is measured here, once per batch.
            recorder().observe("ragserve_batch_size", len(packed), stage=stage)
            items = [item for item, _ in packed]
            sampled = [c for _, c in packed if c is not None]
            if not sampled:  # tracing off, or no request in the batch is sampled
                return await handler(items)
            with tracing.span(f"{stage}.batch", span_links=tracing.links(sampled),
                              attributes={"ragserve.stage": stage,
                                          "ragserve.batch_size": len(packed)}):
                return await handler(items)

        self._batcher = serve.batch(
            max_batch_size=config.max_batch_size,
            batch_wait_timeout_s=config.batch_wait_timeout_s,
            max_concurrent_batches=max_concurrent_batches,
        )(observed)

        def submit(item: Any) -> Awaitable[Any]:
            return self._batcher((item, tracing.current_span_context()))

        self._batch = submit
        self._apply_batching(config)

    def reconfigure(self, user_config: dict) -> None:
        self._apply_batching(BatchingConfig.model_validate(user_config or {}))

    def _apply_batching(self, batching: BatchingConfig) -> None:
        self.batching = batching
        self._batcher.set_max_batch_size(batching.max_batch_size)
        self._batcher.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)
