"""Builders of the RAG application.

``serve run graphs.rag:app`` starts the embedded default; ``serve run configs/local.yaml`` passes
``args`` to ``build_app``. One deployment per stage of ``ragserve.stages.STAGES`` — the class
``<Name>Deployment`` of ``deployments/<name>.py`` — with its options from ``RagAppArgs``, not
from decorators; their handles go to the ingress by stage name.
"""

from __future__ import annotations

import importlib
from typing import Any

from ray import serve
from ray.serve import Application

from deployments._observed import instrument
from deployments.ingress import IngressDeployment
from graphs.args import DeploymentOptions, RagAppArgs
from ragserve.stages import StageSpec, stages_for

__all__ = ["build_app", "build_search_app", "deployment_class", "app", "search_app"]


def deployment_class(spec: StageSpec) -> type:
    """``deployments/<name>.py``'s ``<Name>Deployment``."""
    module = importlib.import_module(f"deployments.{spec.name}")
    return getattr(module, f"{spec.deployment_name}Deployment")


def _deployment(cls: type, name: str, options: DeploymentOptions, **extra: Any):
    return serve.deployment(cls, name=name).options(**options.to_serve_options(), **extra)


def build_app(args: RagAppArgs | dict[str, Any] | None = None) -> Application:
    """Compose the stages (embedder → retriever → reranker → generator, and any query stage)
    behind the FastAPI ingress."""
    a = args if isinstance(args, RagAppArgs) else RagAppArgs.model_validate(args or {})
    stages = {}
    for spec in stages_for(a.mode):
        section = getattr(a, spec.name)
        extra = {"user_config": section.config.batching.model_dump()} if spec.batched else {}
        # The replica's metrics, spans and logs wrap the stage class (deployments/_observed.py).
        cls = instrument(deployment_class(spec), spec.name)
        stages[spec.name] = _deployment(cls, spec.deployment_name, section.deployment,
                                        **extra).bind(section.config,
                                                      observability=a.observability)
    return _deployment(IngressDeployment, "Ingress", a.ingress.deployment).bind(
        a.ingress.config, stages, fingerprint=a.fingerprint(), observability=a.observability)


def build_search_app(args: RagAppArgs | dict[str, Any] | None = None) -> Application:
    """The same graph without a generator: ``/v1/search`` and document routes only."""
    a = args if isinstance(args, RagAppArgs) else RagAppArgs.model_validate(args or {})
    return build_app(a.model_copy(update={"mode": "search"}))


app = build_app()
search_app = build_search_app()
