"""The generator stage in process (tests, notebooks, evaluation without Serve): a ``Generator``
over a ``GeneratorBackend`` (usually the fallback chain), as ``GeneratorDeployment`` exposes it."""

from __future__ import annotations

from typing import AsyncIterator

from ragserve.generation.base import GeneratorBackend
from ragserve.schemas import GenerationRequest, GenerationResult

__all__ = ["InProcessGenerator"]


class InProcessGenerator:
    def __init__(self, backend: GeneratorBackend) -> None:
        self.backend = backend

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return await self.backend.generate(request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        async for item in self.backend.stream(request):
            yield item

    async def health(self) -> dict:
        return {"backend": self.backend.name, **self.backend.health()}
