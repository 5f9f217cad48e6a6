"""Pick the generator backend from config."""

from __future__ import annotations

from typing import Any, Callable

from ragserve.config import (
    EmbedderConfig,
    ExtractiveGeneratorConfig,
    GeneratorConfig,
    LocalGeneratorConfig,
    OpenAIGeneratorConfig,
)
from ragserve.generation.base import GeneratorBackend
from ragserve.generation.chain import FallbackGenerator
from ragserve.generation.ctranslate2 import CTranslate2Generator
from ragserve.generation.evidence import SemanticEvidenceScorer
from ragserve.generation.extractive import ExtractiveGenerator
from ragserve.generation.llamacpp import LlamaCppGenerator
from ragserve.generation.local import TransformersGenerator
from ragserve.generation.openai_compat import OpenAICompatibleGenerator

__all__ = ["build_generator", "build_generation_chain"]


def build_generator(config: GeneratorConfig) -> GeneratorBackend:
    """The backend ``config.backend`` names, constructed but not warmed up.

    Every backend has a synchronous ``warm_up() -> None`` that the caller runs once before
    serving. Only the local model's is heavy (seconds of CPU: run it in a thread, as
    ``GeneratorDeployment`` does); the OpenAI-compatible and extractive ones only load the
    tiktoken encoding, and the OpenAI client is created lazily inside the event loop that
    first uses it, so calling ``warm_up`` from a worker thread is safe for all of them.
    (torch, transformers, ctranslate2 and llama_cpp are imported inside the local backends'
    ``warm_up``.)
    """
    config = GeneratorConfig.model_validate(config)
    backend = config.backend
    if isinstance(backend, LocalGeneratorConfig):
        if backend.engine == "ctranslate2":
            return CTranslate2Generator(config)
        if backend.engine == "llamacpp":
            return LlamaCppGenerator(config)
        return TransformersGenerator(config)
    if isinstance(backend, OpenAIGeneratorConfig):
        return OpenAICompatibleGenerator(config)
    if isinstance(backend, ExtractiveGeneratorConfig):
        return ExtractiveGenerator(config)
    raise TypeError(f"unknown generator backend {type(backend).__name__}")


def build_generation_chain(config: GeneratorConfig, *,
                           text_encoder: Callable[[EmbedderConfig], Any] | None = None,
                           ) -> FallbackGenerator:
    """The generator stage's backend: ``[backend, *fallbacks]`` with retries and a breaker per
    backend, and the routing's cheaper backend for simple queries (none warmed up yet; the
    chain's ``warm_up`` loads them all). ``text_encoder`` builds the encoder of
    ``config.evidence.model`` (the embedder stage's ``SentenceTransformerEmbedder``, handed in
    by whoever composes the stages); needed only when that model is set."""
    config = GeneratorConfig.model_validate(config)

    def one(backend_config) -> GeneratorBackend:
        return build_generator(config.model_copy(
            update={"backend": backend_config, "fallbacks": [], "routing": None}))

    backends = [one(b) for b in (config.backend, *config.fallbacks)]
    simple = one(config.routing.simple_backend) if config.routing is not None else None
    # answers, from the passages' own sentences, when a model's answer is not grounded
    grounded = (one(ExtractiveGeneratorConfig()) if config.grounding.enabled else None)
    scorer = SemanticEvidenceScorer.from_config(config.evidence, text_encoder)
    return FallbackGenerator.from_backends(config, backends, simple, grounded_fallback=grounded,
                                           evidence_scorer=scorer)
