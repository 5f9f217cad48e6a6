"""Calling a stage: its budget, its errors, its time.

``StageCaller.call`` is the one place a stage call is bounded and its failures typed: a timeout
becomes ``StageTimeoutError``, any other failure that is not already a ``RagServeError``
becomes ``StageUnavailableError`` (both 503), each naming the stage. Budgets are
``IngressConfig.timeout_for(stage)``.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager
from typing import Awaitable, Iterator, TypeVar

from pydantic import BaseModel

from ragserve.config import IngressConfig
from ragserve.errors import RagServeError, StageTimeoutError, StageUnavailableError
from ragserve.stages import stage

__all__ = ["StageCaller", "Stopwatch", "describe"]

T = TypeVar("T")


class StageCaller:
    def __init__(self, config: IngressConfig) -> None:
        self.config = config

    async def call(self, name: str, awaitable: Awaitable[T]) -> T:
        timeout = self.config.timeout_for(name)
        try:
            return await asyncio.wait_for(awaitable, timeout=timeout)
        except asyncio.TimeoutError as exc:
            raise StageTimeoutError(
                f"{name} did not answer within {timeout:g}s", details={"stage": name},
            ) from exc
        except RagServeError:
            raise
        except Exception as exc:
            raise StageUnavailableError(
                f"{name} is unavailable: {describe(exc)}", details={"stage": name}
            ) from exc


class Stopwatch:
    """Fills a ``StageTimings``: ``with watch.stage("embedder"): ...`` sets ``embed_ms``;
    ``finish()`` sets ``total_ms`` from the watch's start."""

    def __init__(self, timings: BaseModel) -> None:
        self.timings = timings
        self.start = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            setattr(self.timings, f"{stage(name).verb}_ms", _ms_since(t))

    def elapsed_ms(self) -> float:
        return _ms_since(self.start)

    def first_token(self) -> None:
        """Marks the answer's first text (once): ``first_token_ms`` from the watch's start."""
        if not self.timings.first_token_ms:
            self.timings.first_token_ms = _ms_since(self.start)

    def finish(self) -> BaseModel:
        self.timings.total_ms = _ms_since(self.start)
        return self.timings


def _ms_since(t: float) -> float:
    return round((time.perf_counter() - t) * 1000, 2)


def describe(exc: BaseException) -> str:
    """One short line about an exception, for warnings and logs (never request content)."""
    msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return msg.splitlines()[0][:300] if msg else type(exc).__name__
