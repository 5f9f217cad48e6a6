"""The direct OTLP encoder writes the message the SDK's encoder builds, field for field, and
the exporter built on it delivers spans a collector can read."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export import SpanExporter as BaseExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from ragserve.observability import otlp
from scripts.local_ray import free_port


class Keep(BaseExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans):
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def assert_same_message(spans) -> None:
    ours = ExportTraceServiceRequest.FromString(otlp.encode_spans(spans))
    assert ours == sdk_encode(spans)
    assert ours.resource_spans  # not two empty messages


def record(**provider_kwargs) -> tuple[TracerProvider, Keep]:
    keep = Keep()
    provider = TracerProvider(**provider_kwargs)
    provider.add_span_processor(SimpleSpanProcessor(keep))
    return provider, keep


def test_spans_as_the_graph_makes_them_encode_like_the_sdk():
    provider, keep = record(resource=Resource.create({"service.name": "ragserve",
                                                      "process.pid": 4242}))
    tracer = provider.get_tracer("ragserve")
    for i in range(3):
        with tracer.start_as_current_span("POST /v1/search", kind=SpanKind.SERVER,
                                          attributes={"http.request.method": "POST",
                                                      "ragserve.request_id": f"req-{i}"}) as root:
            with tracer.start_as_current_span("retriever.search", kind=SpanKind.SERVER) as s:
                s.set_attributes({"ragserve.stage": "retriever", "ragserve.candidates": 10,
                                  "ragserve.top_k": 10, "ragserve.mode": "hybrid"})
            root.set_attributes({"ragserve.retrieve_ms": 3.25, "ragserve.total_ms": 4.0,
                                 "http.response.status_code": 200})
    assert len(keep.spans) == 6
    assert_same_message(keep.spans)


def test_every_field_and_value_type_encodes_like_the_sdk():
    provider, keep = record(resource=Resource.create({"service.name": "x", "n": 3}),
                            span_limits=SpanLimits(max_attributes=12, max_events=2, max_links=2))
    tracer = provider.get_tracer("ragserve", "1.2.3", schema_url="https://example.org/s",
                                 attributes={"scope.attr": True})
    other = provider.get_tracer("other")
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331,
                         is_remote=True, trace_flags=TraceFlags(1),
                         trace_state=TraceState([("vendor", "abc"), ("other", "x-1")]))
    values = {"str": "retriever", "unicode": "é ✓ 漢字", "long": "y" * 300, "empty": "",
              "true": True, "false": False, "zero": 0, "neg": -3, "big": 2**62 + 7,
              "float": 1.5, "fzero": 0.0, "ints": [1, 2, 3], "strs": ("a", "é"),
              "bools": [True, False], "floats": [0.5, -1.25]}
    with tracer.start_as_current_span("ingress", context=set_span_in_context(
            NonRecordingSpan(remote)), kind=SpanKind.SERVER, attributes=values) as root:
        root.add_event("fallback", {"backend": "llamacpp", "tries": 2, "elapsed_ms": 12.5})
        root.add_event("")
        root.add_event("dropped")  # over max_events
        root.set_status(Status(StatusCode.ERROR, "boom"))
        with other.start_as_current_span(
                "", kind=SpanKind.CLIENT,
                links=[Link(remote, {"dropped": 1}), Link(remote, {"k": 1, "s": "v"}),
                       Link(root.get_span_context())]) as child:
            child.set_status(Status(StatusCode.OK))
        for kind in (SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.INTERNAL):
            with tracer.start_as_current_span(f"k{kind.value}", kind=kind):
                pass
    spans = keep.spans
    assert spans[-1].dropped_attributes and spans[-1].dropped_events
    assert any(s.dropped_links for s in spans)
    assert_same_message(spans)
    assert_same_message(spans[:1])  # a span with no parent


def test_hand_made_spans_with_values_the_sdk_would_clean():
    """Values the SDK's attribute cleaning would normally reject still encode as the SDK's
    encoder writes them: bytes, a mapping, None, a long name, a zero-length batch."""
    scope = InstrumentationScope("s")
    ctx = SpanContext(1, 2, is_remote=False)
    spans = [ReadableSpan(name="n" * 200, context=ctx, parent=None, resource=Resource({}),
                          attributes={"b": b"\x00\xff", "m": {"k": "v", "n": 2}, "none": None},
                          instrumentation_scope=scope, start_time=1, end_time=2**63 - 1),
             ReadableSpan(name="no scope", context=SpanContext(3, 4, is_remote=False),
                          resource=Resource({"r": "1"}, schema_url="https://r"))]
    assert_same_message(spans)
    assert otlp.encode_spans([]) == sdk_encode([]).SerializeToString() == b""


def test_the_pair_table_stays_bounded_and_correct_when_it_fills(monkeypatch):
    monkeypatch.setattr(otlp, "_KV_CACHE_MAX", 8)
    otlp._KV_CACHE.clear()
    provider, keep = record()
    tracer = provider.get_tracer("t")
    for i in range(40):
        with tracer.start_as_current_span("s", attributes={"id": f"r{i}", "n": i, "fixed": "x"}):
            pass
    assert_same_message(keep.spans)
    assert len(otlp._KV_CACHE) <= 8


def test_a_value_with_no_otlp_encoding_is_refused_by_the_direct_encoder():
    span = ReadableSpan(name="s", context=SpanContext(1, 2, is_remote=False),
                        resource=Resource({}), attributes={"obj": object()})
    with pytest.raises(TypeError):
        otlp.encode_spans([span])


@pytest.fixture
def collector():
    """An OTLP/HTTP endpoint that keeps every request body it receives."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            bodies.append(self.rfile.read(int(self.headers.get("content-length", 0))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", bodies
    server.shutdown()


def test_the_exporter_delivers_what_the_sdk_encoder_would(collector):
    endpoint, bodies = collector
    provider, keep = record()
    with provider.get_tracer("t").start_as_current_span("a", attributes={"k": "v"}):
        pass
    exporter = otlp.SpanExporter(endpoint=endpoint, timeout=5)
    assert exporter.export(keep.spans) is SpanExportResult.SUCCESS
    assert ExportTraceServiceRequest.FromString(bodies[0]) == sdk_encode(keep.spans)
    # a value the direct encoder does not know goes through the SDK's encoder instead
    odd = ReadableSpan(name="odd", context=SpanContext(5, 6, is_remote=False),
                       resource=Resource({}), attributes={"obj": object(), "k": "v"})
    assert exporter.export([odd]) is SpanExportResult.SUCCESS
    sent = ExportTraceServiceRequest.FromString(bodies[1]).resource_spans[0].scope_spans[0]
    assert sent.spans[0].name == "odd"
    assert [a.key for a in sent.spans[0].attributes] == ["k"]  # the SDK skips what it can't
    exporter.shutdown()
    assert exporter.export(keep.spans) is SpanExportResult.FAILURE


def test_the_exporter_reports_a_collector_that_refuses():
    exporter = otlp.SpanExporter(endpoint=f"http://127.0.0.1:{free_port()}/v1/traces",
                                 timeout=1)
    span = ReadableSpan(name="s", context=SpanContext(1, 2, is_remote=False),
                        resource=Resource({}))
    assert exporter.export([span]) is SpanExportResult.FAILURE
