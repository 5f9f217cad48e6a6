"""The generator role."""

from __future__ import annotations

from typing import AsyncIterator, Protocol, runtime_checkable

from ragserve.schemas import GenerationRequest, GenerationResult

__all__ = ["Generator", "GenerationChunk"]


class GenerationChunk(dict):
    """A streamed piece: ``{"delta": str}`` while generating, then one final
    ``{"result": GenerationResult}``."""


@runtime_checkable
class Generator(Protocol):
    name: str

    async def generate(self, request: GenerationRequest) -> GenerationResult: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        """Yield ``{"delta": text}`` items and finally ``{"result": GenerationResult}``."""

    def count_tokens(self, text: str) -> int: ...
