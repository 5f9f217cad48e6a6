"""Typed arguments of the application builders.

``serve run configs/local.yaml`` passes the YAML's ``args:`` here; notebooks and tests build the
same model in Python. Per-stage deployment options (replicas, autoscaling, resources) live here
and in the YAML, never in decorators.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ragserve.config import (
    CacheConfig,
    ChunkingConfig,
    EmbedderConfig,
    GeneratorConfig,
    LimitsConfig,
    RerankerConfig,
    RetrieverConfig,
    StrictModel,
)

__all__ = [
    "AutoscalingOptions",
    "ActorOptions",
    "DeploymentOptions",
    "IngressConfig",
    "RagAppArgs",
]


class AutoscalingOptions(StrictModel):
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    initial_replicas: int | None = Field(default=None, ge=0)
    target_ongoing_requests: float = Field(default=2.0, gt=0)
    upscale_delay_s: float = Field(default=30.0, ge=0)
    downscale_delay_s: float = Field(default=600.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> "AutoscalingOptions":
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


class ActorOptions(StrictModel):
    num_cpus: float | None = Field(default=None, ge=0)
    num_gpus: float | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, ge=0, description="Bytes reserved per replica.")
    resources: dict[str, float] | None = None


class DeploymentOptions(StrictModel):
    """A subset of ``serve.deployment`` options, validated here so YAML typos fail early."""

    num_replicas: int | None = Field(default=None, ge=1, description="Fixed count (no autoscaling).")
    autoscaling_config: AutoscalingOptions | None = None
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    max_queued_requests: int | None = Field(default=None, ge=-1)
    ray_actor_options: ActorOptions | None = None
    health_check_period_s: float | None = Field(default=None, gt=0)
    health_check_timeout_s: float | None = Field(default=None, gt=0)
    graceful_shutdown_timeout_s: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_scaling_mode(self) -> "DeploymentOptions":
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("set num_replicas or autoscaling_config, not both")
        return self

    def max_replicas(self) -> int:
        if self.autoscaling_config is not None:
            return self.autoscaling_config.max_replicas
        return self.num_replicas or 1

    def to_serve_options(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class IngressConfig(StrictModel):
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    stage_timeout_s: float = Field(default=60.0, gt=0, description="Per stage call.")
    stage_timeouts_s: dict[Literal["embedder", "retriever", "reranker", "generator"], float] = Field(
        default_factory=dict, validate_default=True,
        description="Per-stage overrides of stage_timeout_s. The reranker's is 5 s unless set: "
        "it is optional, so past its budget the retriever's order is served (degraded).",
    )
    cache: CacheConfig = Field(default_factory=CacheConfig)

    @field_validator("stage_timeouts_s")
    @classmethod
    def _reranker_budget(cls, v: dict[str, float]) -> dict[str, float]:
        if any(t <= 0 for t in v.values()):
            raise ValueError("stage timeouts must be positive")
        return {"reranker": 5.0, **v}  # setting other stages keeps the reranker's default


class _Stage(StrictModel):
    deployment: DeploymentOptions = Field(default_factory=DeploymentOptions)


def _defaults(num_cpus: float, **options: Any):
    """Default deployment options: small CPU shares so that the whole graph fits a 2-core
    laptop with ``serve run graphs.rag:app`` (Serve's own default is 1 CPU per replica)."""
    return lambda: DeploymentOptions(ray_actor_options=ActorOptions(num_cpus=num_cpus), **options)


class EmbedderStage(_Stage):
    config: EmbedderConfig = Field(default_factory=EmbedderConfig)
    deployment: DeploymentOptions = Field(default_factory=_defaults(0.5, max_ongoing_requests=64))


class RetrieverStage(_Stage):
    config: RetrieverConfig = Field(default_factory=RetrieverConfig)
    deployment: DeploymentOptions = Field(default_factory=_defaults(0.25, max_ongoing_requests=32))


class RerankerStage(_Stage):
    config: RerankerConfig = Field(default_factory=RerankerConfig)
    deployment: DeploymentOptions = Field(default_factory=_defaults(0.25, max_ongoing_requests=16))


class GeneratorStage(_Stage):
    config: GeneratorConfig = Field(default_factory=GeneratorConfig)
    deployment: DeploymentOptions = Field(default_factory=_defaults(0.5, max_ongoing_requests=8))


class IngressStage(_Stage):
    config: IngressConfig = Field(default_factory=IngressConfig)
    deployment: DeploymentOptions = Field(default_factory=_defaults(0.25, max_ongoing_requests=100))


class RagAppArgs(StrictModel):
    """Everything ``build_app`` needs. Every field has a working embedded default."""

    embedder: EmbedderStage = Field(default_factory=EmbedderStage)
    retriever: RetrieverStage = Field(default_factory=RetrieverStage)
    reranker: RerankerStage = Field(default_factory=RerankerStage)
    generator: GeneratorStage = Field(default_factory=GeneratorStage)
    ingress: IngressStage = Field(default_factory=IngressStage)
    mode: Literal["rag", "search"] = Field(
        default="rag", description="'search' builds the graph without a generator."
    )

    @model_validator(mode="after")
    def _local_qdrant_single_writer(self) -> "RagAppArgs":
        # Qdrant's embedded mode locks its folder: only one process may open it.
        if self.retriever.config.local and self.retriever.deployment.max_replicas() > 1:
            raise ValueError(
                "retriever: Qdrant local mode (path) allows one replica; set retriever.config.url "
                "to a Qdrant server to scale the retriever"
            )
        return self

    @model_validator(mode="after")
    def _generator_deadline_inside_stage_timeout(self) -> "RagAppArgs":
        deadline = self.generator.config.deadline_s
        ingress = self.ingress.config
        timeout = ingress.stage_timeouts_s.get("generator", ingress.stage_timeout_s)
        if self.mode == "rag" and deadline >= timeout:
            raise ValueError(
                f"generator.config.deadline_s ({deadline:g}) must be below "
                f"ingress.config.stage_timeout_s ({timeout:g}): otherwise the ingress gives up "
                "before the fallback chain can answer"
            )
        return self

    @model_validator(mode="after")
    def _shared_cache_for_replicas(self) -> "RagAppArgs":
        # The index version that invalidates cached answers must be seen by every replica.
        cache = self.ingress.config.cache
        if (cache.redis_url is None and cache.queries.enabled
                and self.ingress.deployment.max_replicas() > 1):
            raise ValueError(
                "ingress: the in-process cache is per replica, so with more than one ingress "
                "replica cached answers could outlive an ingest on another replica; set "
                "ingress.config.cache.redis_url, or cache.queries.enabled: false"
            )
        return self

    def fingerprint(self) -> str:
        """A hash of every stage setting that can change an answer: part of query-cache keys."""
        import hashlib
        import json

        parts = {name: getattr(self, name).config.model_dump(mode="json")
                 for name in ("embedder", "retriever", "reranker", "generator")}
        for volatile in ("batching", "torch_threads"):  # throughput knobs, not results
            for part in parts.values():
                part.pop(volatile, None)
        blob = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
