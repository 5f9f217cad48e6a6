from ragserve.generation.base import Generator, GeneratorBackend
from ragserve.generation.ctranslate2 import CTranslate2Generator
from ragserve.generation.extractive import ExtractiveGenerator
from ragserve.generation.factory import build_generator
from ragserve.generation.in_process import InProcessGenerator
from ragserve.generation.llamacpp import LlamaCppGenerator
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
    "InProcessGenerator",
    "Generator",
    "GeneratorBackend",
    "TransformersGenerator",
    "CTranslate2Generator",
    "LlamaCppGenerator",
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
