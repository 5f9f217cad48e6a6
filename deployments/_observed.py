"""Observability of the stage replicas, as a wrapper: ``instrument(cls, stage)`` is a
subclass of a stage's deployment class that serves the same methods and

- takes ``observability=`` (``ObservabilityConfig``) in its constructor and sets the replica
  up: the Ray metrics recorder, OpenTelemetry export, JSON logs, the log flusher, Sentry;
- accepts a ``_otel`` carrier (``traceparent``) on every public method — the stage clients
  (``deployments/_client.py``) send one while tracing is on — and runs the call in a server
  span under it, named ``<stage>.<method>`` with what the result says (backend, model,
  candidates, tokens, attempts as events);
- counts calls (``ragserve_stage_calls_total``), the retriever's candidates and the
  generator's breaker states.

The stage classes stay as they are; the builder (``graphs/rag.py``) applies the wrapper.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import nullcontext
from typing import Any

from deployments._metrics import recorder, use_ray_metrics
from ragserve.config import ObservabilityConfig
from ragserve.observability import tracing
from ragserve.observability.errors import configure_sentry
from ragserve.observability.logs import configure_logging
from ragserve.observability.metrics import BREAKER_STATES

__all__ = ["instrument", "setup_process", "SKIPPED_METHODS"]

SKIPPED_METHODS = frozenset({"check_health", "reconfigure"})
"""Serve's own calls: neither traced nor counted."""


def _logs_dir() -> str | None:
    """Serve's log folder of this Ray session; None outside Ray (a test building the class
    directly), where Serve's helper would name ``./serve`` in the working directory."""
    try:
        import ray
        from ray.serve._private.logging_utils import get_serve_logs_dir

        return get_serve_logs_dir() if ray.is_initialized() else None
    except Exception:
        return None


def setup_process(config: ObservabilityConfig | dict | None, component: str,
                  request_id=lambda: None) -> ObservabilityConfig:
    """Everything a replica process sets up once, from the application's config."""
    cfg = ObservabilityConfig.model_validate(config or {})
    use_ray_metrics(cfg.metrics.enabled)
    tracing.configure_tracing(cfg.tracing, component=component)
    configure_logging(cfg.logging, component=component, directory=_logs_dir(),
                      request_id=request_id)
    configure_sentry(cfg.sentry, component=component)
    return cfg


def _annotate(span: Any, stage: str, method: str, self: Any, args: tuple, kwargs: dict,
              result: Any) -> None:
    """Span attributes from what a call was given and gave back (never text), set at once."""
    attrs: dict[str, Any] = {"ragserve.stage": stage}
    config = getattr(self, "config", None)
    model = getattr(config, "model", None)
    if isinstance(model, str):
        attrs["ragserve.model"] = model
    if stage == "embedder" and method == "embed" and args:
        attrs["ragserve.texts"] = len(args[0])
    elif stage == "retriever" and method == "search" and isinstance(result, list):
        attrs["ragserve.candidates"] = len(result)
        if len(args) > 1:
            attrs["ragserve.top_k"] = int(args[1])
        if kwargs.get("mode"):
            attrs["ragserve.mode"] = str(kwargs["mode"])
    elif stage == "reranker" and method == "rerank":
        if len(args) > 1:
            attrs["ragserve.candidates"] = len(args[1])
        if hasattr(result, "backend"):
            attrs["ragserve.backend"] = result.backend
            attrs["ragserve.kept"] = len(result.chunks)
    span.set_attributes(attrs)
    if stage == "generator" and hasattr(result, "usage"):
        _generation_span(span, result)


def _generation_span(span: Any, result: Any) -> None:
    attrs: dict[str, Any] = {"ragserve.backend": result.backend,
                             "ragserve.tokens.prompt": result.usage.prompt_tokens,
                             "ragserve.tokens.completion": result.usage.completion_tokens}
    if result.route:
        attrs["ragserve.route"] = result.route
    span.set_attributes(attrs)
    for a in result.attempts:
        event = {"backend": a.backend, "outcome": a.outcome, "tries": a.tries,
                 "elapsed_ms": a.elapsed_ms}
        if a.reason:
            event["reason"] = a.reason
        span.add_event("fallback" if a.outcome != "ok" else "answered", event)
        if a.tries > 1:
            span.add_event("retries", {"backend": a.backend, "count": a.tries - 1})


def _after(self: Any, stage: str, method: str, result: Any) -> None:
    rec = recorder()
    if stage == "retriever" and method == "search" and isinstance(result, list):
        rec.observe("ragserve_retrieval_candidates", len(result))
    elif stage == "generator":
        _breakers(self)


def _breakers(self: Any) -> None:
    backend = getattr(self, "backend", None)
    if backend is None or not hasattr(backend, "health"):
        return
    try:
        for name, b in backend.health().get("backends", {}).items():
            state = b.get("breaker")
            if state in BREAKER_STATES:
                recorder().set("ragserve_breaker_state", BREAKER_STATES[state], backend=name)
    except Exception:  # measuring never fails a call
        pass


def _server_span(stage: str, name: str, carrier: dict | None) -> Any:
    """The call's span under the caller's context; none when the caller sent no carrier
    (tracing off, or a request that is not sampled: nothing under it would be exported)."""
    if carrier is None:
        return nullcontext(None)
    return tracing.span(f"{stage}.{name}", kind=tracing.SpanKind.SERVER,
                        parent=tracing.extract(carrier))


def _wrap(stage: str, name: str, fn: Any) -> Any:
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def agen(self, *args, _otel: dict | None = None, **kwargs):
            with _server_span(stage, name, _otel) as span:
                last = None
                n = 0
                async for item in fn(self, *args, **kwargs):
                    n += 1
                    last = item
                    yield item
                if span is not None and span.is_recording():
                    span.set_attributes({"ragserve.stage": stage, "ragserve.stream_items": n})
                    result = last.get("result") if isinstance(last, dict) else None
                    if hasattr(result, "usage"):
                        _generation_span(span, result)
            recorder().inc("ragserve_stage_calls_total", stage=stage, method=name, outcome="ok")
            _after(self, stage, name, None)
        return agen

    @functools.wraps(fn)
    async def call(self, *args, _otel: dict | None = None, **kwargs):
        rec = recorder()
        try:
            with _server_span(stage, name, _otel) as span:
                result = await fn(self, *args, **kwargs)
                if span is not None and span.is_recording():
                    _annotate(span, stage, name, self, args, kwargs, result)
        except BaseException:
            rec.inc("ragserve_stage_calls_total", stage=stage, method=name, outcome="error")
            if stage == "generator":
                _breakers(self)
            raise
        rec.inc("ragserve_stage_calls_total", stage=stage, method=name, outcome="ok")
        _after(self, stage, name, result)
        return result
    return call


def instrument(cls: type, stage: str) -> type:
    """``cls`` with the replica's observability around it (see the module docstring)."""
    ns: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__,
                          "__doc__": cls.__doc__, "_observed_stage": stage}
    init = cls.__init__
    if inspect.iscoroutinefunction(init):
        async def __init__(self, *args, observability=None, **kwargs):
            setup_process(observability, stage)
            await init(self, *args, **kwargs)
    else:
        def __init__(self, *args, observability=None, **kwargs):
            setup_process(observability, stage)
            init(self, *args, **kwargs)
    ns["__init__"] = __init__
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") or name in SKIPPED_METHODS:
            continue
        if inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member):
            ns[name] = _wrap(stage, name, member)
    return type(cls.__name__, (cls,), ns)
