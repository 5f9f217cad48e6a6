"""Measurements at the ingress: ``HttpObserver`` for every HTTP request (the edge's
middleware calls it) and ``ObservedService``, a ``RagService`` around another that records
what every response already says (stage timings, tokens, cache, degraded, generator
attempts). Neither changes a request or a response."""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any, AsyncIterator, Callable

from ragserve.config import MetricsConfig
from ragserve.observability import tracing
from ragserve.observability.metrics import CappedLabel, NullRecorder, Recorder
from ragserve.schemas import (
    CacheInfo,
    DeleteResponse,
    DocumentChunks,
    EmbeddingsRequest,
    EmbeddingsResponse,
    IngestRequest,
    IngestResponse,
    QueryRequest,
    QueryResponse,
    SearchRequest,
    SearchResponse,
)
from ragserve.service import RagService
from ragserve.stages import STAGES
from ragserve.text import query_fingerprint

__all__ = ["HttpObserver", "ObservedService", "RequestNotes", "NOTES", "note_error",
           "note_principal", "ROUTES", "degraded_reason"]

log = logging.getLogger("ragserve.requests")

ROUTES = ("/healthz", "/readyz", "/v1/search", "/v1/query", "/v1/embeddings", "/v1/documents",
          "/v1/documents/{doc_id}", "/docs", "/openapi.json")
"""Route labels: the app's route templates; any other path is labelled ``other``."""


class RequestNotes:
    """What the edge learns about one request while it runs (set through ``NOTES``)."""

    __slots__ = ("error", "principal", "tenant", "query_hash", "timings")

    def __init__(self) -> None:
        self.error: str | None = None
        self.principal: str | None = None
        self.tenant: str | None = None
        self.query_hash: str | None = None
        self.timings: dict[str, float] | None = None


NOTES: ContextVar[RequestNotes | None] = ContextVar("ragserve_request_notes", default=None)


def note_error(code: str) -> None:
    """The edge's error mapping names the error type of the response it is making."""
    notes = NOTES.get()
    if notes is not None:
        notes.error = code


def note_principal(principal: str | None, tenant: str | None = None) -> None:
    """The guard names who the checks admitted (a key id, never the key)."""
    notes = NOTES.get()
    if notes is not None:
        notes.principal, notes.tenant = principal, tenant


def _route(path: str, template: str | None) -> str:
    if template:
        return "/v1/documents/{doc_id}" if template.startswith("/v1/documents/") else template
    return path if path in ROUTES else "other"


class HttpObserver:
    """Per HTTP request: the count by route and status, the latency, errors by type and code,
    refusals (401/403, 429), a span at the ingress and one JSON log record."""

    def __init__(self, recorder: Recorder | None = None, config: MetricsConfig | None = None,
                 *, request_log: bool = True, request_id: Callable[[], str | None] = lambda: None):
        self.recorder = recorder or NullRecorder()
        self.config = config or MetricsConfig()
        self.request_log = request_log
        self.request_id = request_id
        self.tenants = CappedLabel(self.config.max_tenants)

    def begin(self, method: str, path: str, headers: dict[bytes, bytes]) -> tuple:
        notes = RequestNotes()
        token = NOTES.set(notes)
        carrier = None
        tp = headers.get(b"traceparent")
        if tp:  # a caller's W3C context: this request joins its trace
            carrier = {"traceparent": tp.decode("latin-1")}
            ts = headers.get(b"tracestate")
            if ts:
                carrier["tracestate"] = ts.decode("latin-1")
        cm = tracing.span(f"{method} {path if path in ROUTES else 'request'}",
                          kind=tracing.SpanKind.SERVER, parent=tracing.extract(carrier),
                          attributes={"http.request.method": method,
                                      "ragserve.request_id": self.request_id() or ""})
        span = cm.__enter__()
        return (time.perf_counter(), notes, token, cm, span)

    def end(self, state: tuple, *, method: str, path: str, template: str | None,
            status: int) -> None:
        start, notes, token, cm, span = state
        elapsed = time.perf_counter() - start
        route = _route(path, template)
        rec = self.recorder
        try:
            rec.inc("ragserve_requests_total", route=route, status=str(status))
            rec.observe("ragserve_request_duration_seconds", elapsed, route=route)
            if status >= 400:
                rec.inc("ragserve_errors_total", type=notes.error or f"http_{status}",
                        code=str(status))
            if status in (401, 403):
                rec.inc("ragserve_auth_denied_total", route=route, code=str(status))
            elif status == 429:
                rec.inc("ragserve_rate_limited_total", route=route)
            if self.config.tenant_label:
                rec.inc("ragserve_tenant_requests_total",
                        tenant=self.tenants(notes.tenant or notes.principal))
            if span.is_recording():
                name = f"{method} {route}"
                if name != span.name:
                    span.update_name(name)
                attributes: dict[str, Any] = {"http.route": route,
                                              "http.response.status_code": status}
                if notes.error:
                    attributes["ragserve.error"] = notes.error
                span.set_attributes(attributes)
                if status >= 500:
                    span.set_status(tracing.Status(tracing.StatusCode.ERROR))
            if self.request_log:
                fields: dict[str, Any] = {"route": route, "method": method, "status": status,
                                          "latency_ms": round(elapsed * 1000, 2)}
                for key in ("error", "principal", "tenant", "query_hash"):
                    value = getattr(notes, key)
                    if value:
                        fields["key_id" if key == "principal" else key] = value
                if notes.timings:
                    fields["timings_ms"] = notes.timings
                log.info("request", extra={"fields": fields, "request_id": self.request_id()})
        finally:
            cm.__exit__(None, None, None)
            NOTES.reset(token)


def degraded_reason(warnings: list[str]) -> str:
    """A bounded label for why an answer is degraded (from the pipeline's warnings)."""
    for w in warnings:
        if w.startswith("reranker unavailable"):
            return "reranker_unavailable"
        if w.startswith("generator unavailable"):
            return "generator_unavailable"
        if w.startswith("answered by fallback"):
            return "generator_fallback"
        if "not supported by the passages" in w and "answered with" in w:
            return "answer_ungrounded"
    return "other"


class ObservedService:
    """A ``RagService`` that records every response of the one it wraps."""

    def __init__(self, inner: RagService, recorder: Recorder,
                 config: MetricsConfig | None = None) -> None:
        self.inner = inner
        self.recorder = recorder
        self.config = config or MetricsConfig()

    def __getattr__(self, name: str) -> Any:  # anything else the wrapped service offers
        return getattr(self.inner, name)

    # --- recording -----------------------------------------------------------------------

    def _note_query(self, text: str) -> None:
        notes = NOTES.get()
        if notes is not None:
            notes.query_hash = query_fingerprint(text)

    def _cache(self, cache: CacheInfo | None) -> None:
        if cache is None:
            return
        rec = self.recorder
        if cache.query in ("hit", "miss", "deduplicated"):
            rec.inc("ragserve_cache_requests_total", tier="query", result=cache.query)
        if cache.embedding_hits:
            rec.inc("ragserve_cache_requests_total", cache.embedding_hits,
                    tier="embedding", result="hit")
        if cache.embedding_misses:
            rec.inc("ragserve_cache_requests_total", cache.embedding_misses,
                    tier="embedding", result="miss")

    def _ranked(self, route: str, resp: SearchResponse | QueryResponse, passages: int) -> None:
        rec = self.recorder
        timings = resp.timings.model_dump()
        # A cached answer carries the timings of the request that computed it: count only
        # the stage work this request did.
        if resp.cache is None or resp.cache.query not in ("hit", "deduplicated"):
            for s in STAGES:
                ms = timings.get(f"{s.verb}_ms") or 0.0
                if ms > 0:
                    rec.observe("ragserve_stage_duration_seconds", ms / 1000, stage=s.verb)
        notes = NOTES.get()
        if notes is not None:
            notes.timings = {k: v for k, v in timings.items() if v}
        # On a traced request, the stage timings as the pipeline saw them: against each
        # replica span's duration they show the time spent in between (routing, queues).
        if tracing.recording():
            tracing.annotate({f"ragserve.{k}": v for k, v in timings.items() if v})
        rec.observe("ragserve_results_returned", passages, route=route)
        if passages == 0:
            rec.inc("ragserve_empty_results_total", route=route)
        if resp.degraded:
            rec.inc("ragserve_degraded_total", reason=degraded_reason(resp.warnings))
        self._cache(resp.cache)

    def _generation(self, resp: QueryResponse) -> None:
        if resp.cache is not None and resp.cache.query in ("hit", "deduplicated"):
            return  # no generator ran for this request
        rec = self.recorder
        if not resp.generation and resp.backends.generator:  # a backend without a chain
            rec.inc("ragserve_generation_attempts_total", backend=resp.backends.generator,
                    outcome="ok")
        for a in resp.generation:
            rec.inc("ragserve_generation_attempts_total", backend=a.backend, outcome=a.outcome)
            if a.tries > 1:
                rec.inc("ragserve_generation_retries_total", a.tries - 1, backend=a.backend)
        answered = next((a for a in resp.generation if a.outcome == "ok"), None)
        if answered is not None and answered is not resp.generation[0]:
            rec.inc("ragserve_generation_fallbacks_total", backend=answered.backend)
        if resp.timings.first_token_ms > 0:  # streamed or whole, as the pipeline saw it
            rec.observe("ragserve_time_to_first_token_seconds",
                        resp.timings.first_token_ms / 1000)
        backend = answered.backend if answered else (resp.backends.generator or "none")
        model = resp.backends.generator or backend
        u = resp.usage
        if u.prompt_tokens:
            rec.inc("ragserve_tokens_total", u.prompt_tokens, direction="prompt",
                    backend=backend, model=model)
        if u.completion_tokens:
            rec.inc("ragserve_tokens_total", u.completion_tokens, direction="completion",
                    backend=backend, model=model)
        price = self.config.prices.get(f"{backend}/{model}") or self.config.prices.get(model)
        if price is not None and (u.prompt_tokens or u.completion_tokens):
            cost = (u.prompt_tokens * price.prompt_per_1k
                    + u.completion_tokens * price.completion_per_1k) / 1000
            rec.inc("ragserve_generation_cost_total", cost, backend=backend, model=model,
                    currency=self.config.currency)

    # --- RagService ----------------------------------------------------------------------

    async def startup(self) -> None:
        await self.inner.startup()

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        return await self.inner.readiness()

    async def search(self, req: SearchRequest) -> SearchResponse:
        self._note_query(req.query)
        resp = await self.inner.search(req)
        self._ranked("/v1/search", resp, len(resp.results))
        return resp

    async def query(self, req: QueryRequest, **kwargs: Any) -> QueryResponse:
        self._note_query(req.query)
        resp = await self.inner.query(req, **kwargs)  # kwargs: the protocol's ``history``
        self._ranked("/v1/query", resp, len(resp.citations))
        self._generation(resp)
        return resp

    async def query_events(self, req: QueryRequest,
                           **kwargs: Any) -> AsyncIterator[tuple[str, dict]]:
        self._note_query(req.query)
        async for event, data in self.inner.query_events(req, **kwargs):
            if event == "done":
                try:
                    resp = QueryResponse.model_validate({**data, "citations": []})
                    self._ranked("/v1/query", resp, int(data.get("passages_used", 0)))
                    self._generation(resp)
                except Exception:  # measuring never breaks an answer
                    pass
            yield event, data

    async def embed(self, req: EmbeddingsRequest) -> EmbeddingsResponse:
        resp = await self.inner.embed(req)
        self._cache(resp.cache)
        return resp

    async def ingest(self, req: IngestRequest) -> IngestResponse:
        resp = await self.inner.ingest(req)
        self._cache(resp.cache)
        return resp

    async def rerank(self, req: Any) -> Any:
        return await self.inner.rerank(req)

    async def get_document(self, doc_id: str) -> DocumentChunks:
        return await self.inner.get_document(doc_id)

    async def delete_document(self, doc_id: str) -> DeleteResponse:
        return await self.inner.delete_document(doc_id)
