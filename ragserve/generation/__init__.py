from ragserve.generation.base import GenerationChunk, Generator
from ragserve.generation.extractive import ExtractiveGenerator
from ragserve.generation.factory import build_generator
from ragserve.generation.local import TransformersGenerator, converted_model_dir
from ragserve.generation.openai_compat import OpenAICompatibleGenerator
from ragserve.generation.prompt import (
    PromptPlan,
    build_prompt,
    extract_citations,
    plan_prompt,
    resolve_max_tokens,
)

__all__ = [
    "Generator",
    "GenerationChunk",
    "TransformersGenerator",
    "OpenAICompatibleGenerator",
    "ExtractiveGenerator",
    "build_generator",
    "converted_model_dir",
    "PromptPlan",
    "build_prompt",
    "plan_prompt",
    "resolve_max_tokens",
    "extract_citations",
]
