"""Generator deployment: one backend chosen by config (local model, OpenAI-compatible, extractive)."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from ragserve.config import GeneratorConfig
from ragserve.generation.factory import build_generator
from ragserve.schemas import GenerationRequest, GenerationResult

__all__ = ["GeneratorDeployment"]


class GeneratorDeployment:
    async def __init__(self, config: GeneratorConfig, generator_factory=build_generator):
        self.config = GeneratorConfig.model_validate(config)
        self.backend = generator_factory(self.config)
        # Loading a local model is seconds of CPU work: keep the event loop free meanwhile.
        await asyncio.to_thread(self.backend.warm_up)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return await self.backend.generate(request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        async for item in self.backend.stream(request):
            yield item

    async def health(self) -> dict:
        health = getattr(self.backend, "health", None)
        detail = health() if callable(health) else {}
        if asyncio.iscoroutine(detail):
            detail = await detail
        return {"backend": self.backend.name, **(detail or {})}

    async def check_health(self) -> None:
        return None
