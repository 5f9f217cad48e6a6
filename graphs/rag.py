"""Builders of the RAG application.

``serve run graphs.rag:app`` starts the embedded default; ``serve run configs/local.yaml`` passes
``args`` to ``build_app``. Deployment options come from ``RagAppArgs``, not from decorators.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from deployments.embedder import EmbedderDeployment
from deployments.generator import GeneratorDeployment
from deployments.ingress import IngressDeployment
from deployments.reranker import RerankerDeployment
from deployments.retriever import RetrieverDeployment
from graphs.args import DeploymentOptions, RagAppArgs

__all__ = ["build_app", "build_search_app", "app", "search_app"]


def _deployment(cls: type, name: str, options: DeploymentOptions, **extra: Any):
    opts = {**options.to_serve_options(), **extra}
    return serve.deployment(cls, name=name).options(**opts)


def build_app(args: RagAppArgs | dict[str, Any] | None = None) -> Application:
    """Compose embedder → retriever → reranker → generator behind the FastAPI ingress."""
    a = args if isinstance(args, RagAppArgs) else RagAppArgs.model_validate(args or {})
    embedder = _deployment(
        EmbedderDeployment, "Embedder", a.embedder.deployment,
        user_config=a.embedder.config.batching.model_dump(),
    ).bind(a.embedder.config)
    retriever = _deployment(RetrieverDeployment, "Retriever", a.retriever.deployment).bind(
        a.retriever.config
    )
    reranker = _deployment(
        RerankerDeployment, "Reranker", a.reranker.deployment,
        user_config=a.reranker.config.batching.model_dump(),
    ).bind(a.reranker.config)
    generator = None
    if a.mode == "rag":
        generator = _deployment(GeneratorDeployment, "Generator", a.generator.deployment).bind(
            a.generator.config
        )
    return _deployment(IngressDeployment, "Ingress", a.ingress.deployment).bind(
        a.ingress.config, embedder, retriever, reranker, generator, fingerprint=a.fingerprint()
    )


def build_search_app(args: RagAppArgs | dict[str, Any] | None = None) -> Application:
    """The same graph without a generator: ``/v1/search`` and document routes only."""
    a = args if isinstance(args, RagAppArgs) else RagAppArgs.model_validate(args or {})
    return build_app(a.model_copy(update={"mode": "search"}))


app = build_app()
search_app = build_search_app()
