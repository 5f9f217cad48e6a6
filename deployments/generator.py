"""Generator deployment: a fallback chain of backends from config (local model,
OpenAI-compatible, extractive), with retries, a breaker per backend and simple-query routing.
The chain's evidence scorer (``generator.config.evidence.model``) loads with the embedder
stage's encoder, handed in here where the stages are composed."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Callable

from ragserve.config import GeneratorConfig
from ragserve.embedding import SentenceTransformerEmbedder
from ragserve.errors import StageUnavailableError
from ragserve.generation.chain import FallbackGenerator
from ragserve.generation.factory import build_generation_chain
from ragserve.schemas import GenerationRequest, GenerationResult

__all__ = ["GeneratorDeployment", "build_chain"]


def build_chain(config: GeneratorConfig) -> FallbackGenerator:
    """The configured chain, its evidence model loaded with the embedder's encoder."""
    return build_generation_chain(config, text_encoder=SentenceTransformerEmbedder)


class GeneratorDeployment:
    """Serves the ``Generator`` role."""

    async def __init__(self, config: GeneratorConfig,
                       generator_factory: Callable[[GeneratorConfig], FallbackGenerator] = build_chain):
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
        return {"backend": self.backend.name, **self.backend.health()}

    async def check_health(self) -> None:
        """Serve's health check: a replica with no usable backend is replaced."""
        if not self.backend.healthy():
            raise StageUnavailableError("no generator backend is loaded")

    async def __del__(self):
        await self.backend.aclose()
