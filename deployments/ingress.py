"""Ingress deployment: the FastAPI app and the handle API in front of the stage handles."""

from __future__ import annotations

import logging

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments._client import client_for
from deployments._metrics import recorder
from deployments._observed import setup_process
from ragserve.cache import CacheLayer
from ragserve.config import IngressConfig, ObservabilityConfig
from ragserve.edge import Guard, HandleAPI, create_app
from ragserve.edge.context import REQUEST_ID
from ragserve.observability import HttpObserver, ObservedService
from ragserve.pipeline import RAGPipeline, StageSet
from ragserve.security.auth import SecurityLayer, check_exposure
from ragserve.security.config import redis_url_with_password
from ragserve.security.pii_service import pii_layer

__all__ = ["IngressDeployment"]

_log = logging.getLogger("ragserve.security")


@serve.ingress()
class IngressDeployment(HandleAPI):
    """Holds no model. ``stages`` maps each stage's name (``ragserve.stages.STAGES``) to its
    handle. At start-up it checks that the index matches the embedder; a mismatch fails the
    replica with a ``ConfigurationError`` instead of serving corrupt results.

    Handle methods (``query``, ``search``, ``ingest``, ``embed``, ``get_document``,
    ``delete_document``, ``readiness``) come from ``HandleAPI``: the same guard and
    validation as the HTTP routes."""

    async def __init__(self, config: IngressConfig, stages: dict[str, DeploymentHandle],
                       fingerprint: str = "", observability: ObservabilityConfig | None = None):
        self.config = IngressConfig.model_validate(config)
        # Metrics, traces, JSON logs and error tracking of this replica (off: no-ops).
        self.observability = setup_process(observability, "ingress", request_id=REQUEST_ID.get)
        # Keys, scopes and limits are the guard's check; the retriever gets the caller's
        # tenant and groups through the access layer (docs/security.md).
        cache = self.config.cache
        self.security = SecurityLayer(self.config.security, redis_url=redis_url_with_password(
            cache.redis_url, cache.redis_password))
        _log.warning("security: %s",
                     check_exposure(self.config.security, await _serve_http_host()))
        self.guard = Guard([self.security.check])
        # The cache tiers wrap the stage clients; the stages never see them.
        self.cache = CacheLayer.from_config(self.config.cache)
        stage_set = StageSet.from_mapping(
            {name: client_for(name, handle) for name, handle in stages.items()})
        stage_set.embedder = self.cache.embedder(stage_set.embedder)
        stage_set.retriever = self.security.retriever(stage_set.retriever)
        # PII policies sit inside the query cache: cached answers are already filtered, and
        # the answers policy enters the cache key.
        pipeline = pii_layer(RAGPipeline(stage_set, config=self.config), self.config.pii)
        self.pipeline = self.cache.pipeline(
            pipeline, fingerprint=fingerprint + self.config.pii.answers_fingerprint())
        await self.pipeline.startup()
        if self.observability.metrics.enabled:  # records what every response says
            self.pipeline = ObservedService(self.pipeline, recorder(),
                                            self.observability.metrics)
        self.pipeline = self.security.service(self.pipeline)  # charges tokens to the key
        # handle calls are measured and traced as HTTP requests are (``handle.<method>``)
        super().__init__(lambda: self.pipeline, self.guard, observer=self._http_observer())

    async def __del__(self):
        await self.cache.aclose()  # the Redis connection pool, when there is one
        await self.security.aclose()

    def __serve_build_asgi_app__(self):
        return create_app(lambda: self.pipeline, guard=self.guard,
                          max_request_bytes=self.config.limits.max_request_chars,
                          model_name=_app_name(), observer=self._http_observer(),
                          keyring=None if self.security.open else self.security.ring)

    def _http_observer(self) -> HttpObserver:
        obs = self.observability
        return HttpObserver(recorder(), obs.metrics, request_log=obs.logging.request_log,
                            request_id=REQUEST_ID.get)


async def _serve_http_host() -> str | None:
    """The host Serve's HTTP server binds (``http_options.host``); None when unknown."""
    try:
        import ray
        from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        return (await controller.get_http_config.remote()).host
    except Exception:  # noqa: BLE001 - outside a cluster (tests): the caller decides
        return None


def _app_name() -> str:
    """The Serve application's name: what ``/v1/models`` lists and chat requests name."""
    try:
        return serve.get_replica_context().app_name or "ragserve"
    except Exception:  # noqa: BLE001 - built outside a replica (tests): the default name
        return "ragserve"
