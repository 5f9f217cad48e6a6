"""Typed arguments of the application builders.

``serve run configs/local.yaml`` passes the YAML's ``args:`` here; notebooks and tests build the
same model in Python. Per-stage deployment options (replicas, autoscaling, resources) live here
and in the YAML, never in decorators.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, create_model, model_validator

from ragserve.config import IngressConfig, ObservabilityConfig, StrictModel
from ragserve.stages import STAGES, StageSpec

__all__ = [
    "AutoscalingOptions",
    "ActorOptions",
    "DeploymentOptions",
    "RagAppArgs",
    "STAGE_ARGS",
]


class AutoscalingOptions(StrictModel):
    min_replicas: int = Field(default=1, ge=0, description="Fewest replicas.")
    max_replicas: int = Field(default=1, ge=1, description="Most replicas.")
    initial_replicas: int | None = Field(
        default=None, ge=0, description="Replicas at start (None: min_replicas).")
    target_ongoing_requests: float = Field(
        default=2.0, gt=0, description="Requests in flight per replica that autoscaling aims at.")
    upscale_delay_s: float = Field(default=30.0, ge=0, description="Load held this long scales up.")
    downscale_delay_s: float = Field(
        default=600.0, ge=0, description="Idleness held this long scales down.")

    @model_validator(mode="after")
    def _bounds(self) -> "AutoscalingOptions":
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


class ActorOptions(StrictModel):
    num_cpus: float | None = Field(default=None, ge=0, description="CPUs reserved per replica.")
    num_gpus: float | None = Field(
        default=None, ge=0, description="GPUs per replica (0.5: two replicas share one).")
    memory: int | None = Field(default=None, ge=0, description="Bytes reserved per replica.")
    resources: dict[str, float] | None = Field(
        default=None, description="Custom Ray resources per replica (places it on nodes that have them).")


class DeploymentOptions(StrictModel):
    """A subset of ``serve.deployment`` options, validated here so YAML typos fail early."""

    num_replicas: int | None = Field(default=None, ge=1, description="Fixed count (no autoscaling).")
    autoscaling_config: AutoscalingOptions | None = Field(
        default=None, description="Scale between bounds by load (instead of num_replicas).")
    max_ongoing_requests: int | None = Field(
        default=None, ge=1, description="Concurrent requests per replica (≥ a batch size).")
    max_queued_requests: int | None = Field(
        default=None, ge=-1, description="Queued requests before callers get 503 (-1: no bound).")
    ray_actor_options: ActorOptions | None = Field(
        default=None, description="Resources per replica.")
    health_check_period_s: float | None = Field(
        default=None, gt=0, description="Seconds between Serve's health checks.")
    health_check_timeout_s: float | None = Field(
        default=None, gt=0, description="A health check slower than this fails.")
    graceful_shutdown_timeout_s: float | None = Field(
        default=None, ge=0, description="Time a stopping replica has to finish its requests.")

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


class _Stage(StrictModel):
    deployment: DeploymentOptions = Field(
        default_factory=DeploymentOptions, description="Serve options of the deployment.")


def _stage_args(spec: StageSpec) -> type[_Stage]:
    """``RagAppArgs.<name>``: the stage's own config and its deployment options, whose
    defaults (a small CPU share, ``max_ongoing_requests``) let the whole default graph fit a
    2-core laptop under ``serve run graphs.rag:app`` (Serve's own default is 1 CPU each)."""
    def default_options() -> DeploymentOptions:
        return DeploymentOptions(ray_actor_options=ActorOptions(num_cpus=spec.num_cpus),
                                 max_ongoing_requests=spec.max_ongoing_requests)

    return create_model(
        f"{spec.deployment_name}Stage",
        __base__=_Stage,
        __doc__=f"The {spec.name} stage: its config and its deployment options.",
        config=(spec.config, Field(default_factory=spec.config,
                                   description=f"The {spec.name}'s own settings.")),
        deployment=(DeploymentOptions, Field(default_factory=default_options,
                                             description="Serve options of the deployment.")),
    )


class IngressStage(_Stage):
    config: IngressConfig = Field(default_factory=IngressConfig, description="The ingress's settings.")
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(
            ray_actor_options=ActorOptions(num_cpus=0.25), max_ongoing_requests=100),
        description="Serve options of the ingress deployment.")


class _RagAppArgsBase(StrictModel):
    """Validators and helpers of ``RagAppArgs`` (its stage fields come from ``STAGES``)."""

    ingress: IngressStage = Field(default_factory=IngressStage, description="The FastAPI ingress.")
    mode: Literal["rag", "search"] = Field(
        default="rag", description="'search' builds the graph without a generator."
    )
    observability: ObservabilityConfig = Field(
        default_factory=ObservabilityConfig,
        description="Metrics, traces, logs and error tracking of the ingress and every stage.")

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
        timeout = ingress.timeout_for("generator")
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

        parts = {spec.name: getattr(self, spec.name).config.model_dump(
                     mode="json", exclude=set(spec.throughput_knobs))
                 for spec in STAGES}
        blob = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


STAGE_ARGS: dict[str, type[_Stage]] = {spec.name: _stage_args(spec) for spec in STAGES}

RagAppArgs = create_model(
    "RagAppArgs",
    __base__=_RagAppArgsBase,
    __doc__="Everything ``build_app`` needs: one section per stage of ``STAGES`` plus the "
            "ingress. Every field has a working embedded default.",
    **{name: (model, Field(default_factory=model, description=f"The {name} stage."))
       for name, model in STAGE_ARGS.items()},
)
