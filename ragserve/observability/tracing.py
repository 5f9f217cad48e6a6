"""OpenTelemetry traces: off unless ``TracingConfig.enabled``; then one trace per request.

Each process (the ingress replica, every stage replica) calls ``configure_tracing`` once; it
builds a private ``TracerProvider`` (Serve's own tracing, when an operator turns it on, keeps
the global one) exporting over OTLP/HTTP in the background (``otlp.SpanExporter``: the SDK's
exporter with a direct protobuf encoder). The W3C context crosses handle
calls as a plain ``traceparent`` carrier (``inject``/``extract``): the stage clients send it,
the replica side (``deployments/_observed.py``) starts its span under it.

While tracing is off every helper is a cheap no-op: ``enabled()`` is a module flag. While it is
on, a request that is not sampled makes one span (the ingress's, whose trace id its log record
carries) and nothing downstream: ``recording()`` is false, so no carrier and no replica span.
A sampled one makes the ingress span and one span per stage call, in the stage's replica.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Sequence

from opentelemetry import context, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ragserve.config import TracingConfig

__all__ = ["configure_tracing", "enabled", "recording", "tracer", "span", "event", "annotate",
           "inject", "extract",
           "current_trace_id", "current_span_context", "links", "shutdown_tracing",
           "SpanKind", "Status", "StatusCode"]

_PROPAGATOR = TraceContextTextMapPropagator()
_NOOP = trace.NoOpTracer()
_tracer: trace.Tracer = _NOOP
_provider: Any = None
_enabled = False


def configure_tracing(config: TracingConfig | None, *, component: str) -> bool:
    """Start exporting this process's spans when ``config`` enables tracing; idempotent."""
    global _tracer, _provider, _enabled
    if config is None or not config.enabled or _enabled:
        return _enabled
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from ragserve.observability.otlp import SpanExporter

    resource = Resource.create({
        "service.name": config.service_name,
        "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
        "ragserve.component": component,
        "process.pid": os.getpid(),
    })
    _provider = TracerProvider(resource=resource,
                               sampler=ParentBased(TraceIdRatioBased(config.sampling_ratio)))
    exporter = SpanExporter(
        endpoint=config.otlp_endpoint,
        headers={k: v.get_secret_value() for k, v in config.headers.items()}, timeout=5)
    # Spans leave in the background, in batches: every ``export_delay_s``, or as soon as 512
    # are waiting.
    _provider.add_span_processor(BatchSpanProcessor(
        exporter, schedule_delay_millis=config.export_delay_s * 1000))
    _tracer = _provider.get_tracer("ragserve")
    _enabled = True
    return True


def shutdown_tracing() -> None:
    """Flush what is pending and stop exporting (tests, replica shutdown)."""
    global _tracer, _provider, _enabled
    if _provider is not None:
        _provider.shutdown()
    _tracer, _provider, _enabled = _NOOP, None, False


def enabled() -> bool:
    return _enabled


def recording() -> bool:
    """Whether the current span is sampled (recorded and exported). Work that only feeds a
    trace — child spans, carriers for other processes — is skipped when it is not: with the
    parent-based sampler nothing under an unsampled span would be exported anyway."""
    return _enabled and trace.get_current_span().is_recording()


def tracer() -> trace.Tracer:
    return _tracer


class span:  # noqa: N801 - used as ``with tracing.span(...)``, like a function
    """A span made current for the block (a non-recording one while tracing is off). An
    exception leaving the block marks the span as an error and is recorded on it.

    What the SDK's ``start_as_current_span`` does, without its three nested generator-based
    context managers: one object that starts the span, attaches it and ends it."""

    __slots__ = ("_args", "_span", "_token")

    def __init__(self, name: str, *, kind: SpanKind = SpanKind.INTERNAL, parent: Any = None,
                 attributes: dict[str, Any] | None = None,
                 span_links: Sequence[Link] = ()) -> None:
        self._args = (name, parent, kind, attributes, span_links)
        self._span: Any = trace.INVALID_SPAN
        self._token: Any = None

    def __enter__(self) -> Any:
        if not _enabled:
            return self._span
        name, parent, kind, attributes, span_links = self._args
        self._span = _tracer.start_span(name, context=parent, kind=kind, attributes=attributes,
                                        links=span_links or None)
        self._token = context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._token is None:
            return
        s = self._span
        try:
            # As the SDK's ``use_span``: errors only (not a cancellation or GeneratorExit).
            if isinstance(exc, Exception) and s.is_recording():
                s.record_exception(exc)
                s.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            context.detach(self._token)
            self._token = None
            s.end()


def event(name: str, attributes: dict[str, Any] | None = None) -> None:
    """An event on the current span (nothing while tracing is off or no span records)."""
    if _enabled:
        trace.get_current_span().add_event(name, attributes or {})


def annotate(attributes: dict[str, Any]) -> None:
    """Attributes on the current span, when it records (nothing otherwise)."""
    if _enabled:
        current = trace.get_current_span()
        if current.is_recording():
            current.set_attributes(attributes)


def inject() -> dict[str, str] | None:
    """The current context as a W3C carrier (``traceparent``), or None while off."""
    if not _enabled:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier or None


def extract(carrier: dict[str, str] | None) -> Any:
    """The context a carrier names (None: the current one)."""
    if not carrier:
        return None
    return _PROPAGATOR.extract(carrier=carrier)


def current_span_context() -> Any:
    """The current span's context when it is sampled, else None (what a batch links to)."""
    if not _enabled:
        return None
    ctx = trace.get_current_span().get_span_context()
    return ctx if ctx.is_valid and ctx.trace_flags.sampled else None


def links(contexts: Sequence[Any]) -> list[Link]:
    return [Link(c) for c in contexts if c is not None]


def current_trace_id() -> str | None:
    """The current trace id (32 hex digits) for log records, when a span is current."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
