"""Observability of the core, without Ray: what the edge and ``ObservedService`` record for
each request, bounded labels, JSON logs with no request text, the log flusher, the trace
plumbing and Sentry's scrubbing."""

from __future__ import annotations

import json
import logging
import logging.handlers

import httpx
import pytest

from ragserve.cache import CacheLayer
from ragserve.config import CacheConfig, MetricsConfig, ObservabilityConfig, TracingConfig
from ragserve.edge import create_app
from ragserve.edge.context import REQUEST_ID
from ragserve.errors import RagServeError
from ragserve.observability import CappedLabel, HttpObserver, MemoryRecorder, ObservedService
from ragserve.observability.errors import scrub
from ragserve.observability.logs import JsonFormatter, LogFlusher
from ragserve.observability.metrics import METRICS
from ragserve.observability.service import degraded_reason
from ragserve.schemas import IngestRequest
from tests.fakes import FakeGenerator
from tests.unit.test_pipeline import make

SECRET_QUERY = "what is the canary-7f3a secret of alpha"


async def _client(recorder, metrics=None, generator=None):
    p = make(generator=generator)
    await p.startup()
    await p.ingest(IngestRequest(documents=[{"id": "a", "text": "alpha text about secrets"},
                                            {"id": "b", "text": "beta text"}]))
    config = metrics or MetricsConfig(prices={"fake-gen": {"prompt_per_1k": 1.0,
                                                       "completion_per_1k": 2.0}})
    cached = CacheLayer.from_config(CacheConfig()).pipeline(p, fingerprint="test")
    service = ObservedService(cached, recorder, config)
    app = create_app(lambda: service,
                     observer=HttpObserver(recorder, config, request_id=REQUEST_ID.get))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def test_metric_names_are_prefixed_with_units_and_bounded_labels():
    forbidden = {"query", "doc_id", "document", "key", "api_key", "text", "request_id"}
    for m in METRICS:
        assert m.name.startswith("ragserve_")
        if m.kind == "counter":
            assert m.name.endswith("_total"), m.name
        if m.kind == "histogram" and "duration" in m.name or "first_token" in m.name:
            assert m.name.endswith("_seconds"), m.name
        assert not forbidden & set(m.labels), m.name
    assert len({m.name for m in METRICS}) == len(METRICS)


async def test_a_query_records_route_status_stages_tokens_cost_and_cache(caplog):
    rec = MemoryRecorder()
    async with await _client(rec) as c:
        with caplog.at_level(logging.INFO, logger="ragserve.requests"):
            r = await c.post("/v1/query", json={"query": SECRET_QUERY})
            assert r.status_code == 200
            body = r.json()
            r2 = await c.post("/v1/query", json={"query": SECRET_QUERY})  # a cache hit
            assert r2.json()["cache"]["query"] == "hit"
            assert (await c.post("/v1/search", json={"query": "zzz qqq"})).status_code == 200
            assert (await c.post("/v1/search", json={"query": ""})).status_code == 422
    assert rec.total("ragserve_requests_total", route="/v1/query", status="200") == 2
    assert rec.total("ragserve_requests_total", route="/v1/search", status="422") == 1
    assert rec.total("ragserve_errors_total", type="invalid_request", code="422") == 1
    assert len(rec.values("ragserve_request_duration_seconds", route="/v1/query")) == 2
    # stage work counted once: the cached answer did not run the stages again
    assert len(rec.values("ragserve_stage_duration_seconds", stage="embed")) == 2  # query+search
    assert rec.total("ragserve_cache_requests_total", tier="query", result="hit") == 1
    assert rec.total("ragserve_cache_requests_total", tier="query", result="miss") >= 1
    usage = body["usage"]
    assert rec.total("ragserve_tokens_total", direction="completion") == usage["completion_tokens"]
    backend = body["backends"]["generator"]
    assert rec.total("ragserve_generation_attempts_total", backend=backend, outcome="ok") == 1
    if backend == "fake-gen":
        expected = (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1000
        assert rec.total("ragserve_generation_cost_total") == pytest.approx(expected)
    # labels never carry the query; the request log carries its hash only
    assert all("canary" not in str(k) for k in [*rec.counters, *rec.observations])
    lines = [r for r in caplog.records if r.name == "ragserve.requests"]
    assert len(lines) == 4
    fields = lines[0].fields
    assert fields["route"] == "/v1/query" and fields["status"] == 200
    assert len(fields["query_hash"]) == 12 and "timings_ms" in fields
    assert lines[0].request_id
    out = JsonFormatter("ingress").format(lines[0])
    assert "canary" not in out and json.loads(out)["request_id"] == lines[0].request_id


async def test_time_to_first_token_is_recorded_for_whole_and_streamed_answers():
    """The pipeline times the answer's first text either way (a whole answer by the generator's
    own clock); the metric reads that timing, so both kinds of answer feed it."""
    from ragserve.config import ExtractiveGeneratorConfig
    from ragserve.generation.extractive import ExtractiveGenerator
    from ragserve.schemas import QueryRequest

    rec = MemoryRecorder()
    p = make(generator=ExtractiveGenerator(ExtractiveGeneratorConfig()))
    await p.startup()
    await p.ingest(IngestRequest(documents=[{"id": "a", "text": "Alpha text holds the secrets."},
                                            {"id": "b", "text": "Beta text holds nothing."}]))
    service = ObservedService(p, rec, MetricsConfig())
    whole = (await service.query(QueryRequest(query="which text holds the secrets"))).timings
    assert whole.embed_ms + whole.retrieve_ms <= whole.first_token_ms <= whole.total_ms
    events = [e async for e in service.query_events(QueryRequest(query="what does beta hold"))]
    assert [e for e, _ in events][0] == "meta" and "token" in [e for e, _ in events]
    streamed = events[-1][1]["timings"]
    assert 0 < streamed["first_token_ms"] <= streamed["total_ms"]
    assert rec.values("ragserve_time_to_first_token_seconds") == pytest.approx(
        [whole.first_token_ms / 1000, streamed["first_token_ms"] / 1000])


async def test_empty_results_degraded_answers_and_fallbacks_are_counted():
    rec = MemoryRecorder()
    p = make()
    await p.startup()  # nothing ingested
    app = create_app(lambda: ObservedService(p, rec), observer=HttpObserver(rec))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/search", json={"query": "nothing matches"})
        assert r.status_code == 200 and r.json()["results"] == []
    assert rec.total("ragserve_empty_results_total", route="/v1/search") == 1
    assert degraded_reason(["answered by fallback extractive: local failed (timeout)"]) == (
        "generator_fallback")
    assert degraded_reason(["reranker unavailable, kept the retriever's order: x"]) == (
        "reranker_unavailable")
    assert degraded_reason(["generator unavailable, returning passages only"]) == (
        "generator_unavailable")
    assert degraded_reason(["the local answer was not supported by the passages (0 of 2 "
                            "sentence(s) …); answered with extractive sentences from the "
                            "passages instead"]) == "answer_ungrounded"


async def test_auth_denied_and_rate_limited_are_counted_from_the_guard():
    from ragserve.edge import Guard
    from ragserve.errors import RagServeError as E

    class Denied(E):
        status_code, code = 401, "unauthorized"

    class Limited(E):
        status_code, code = 429, "rate_limited"

    calls = iter([Denied("no key"), Limited("slow down")])

    async def check(ctx):
        raise next(calls)

    rec = MemoryRecorder()
    p = make()
    await p.startup()
    app = create_app(lambda: p, guard=Guard([check]), observer=HttpObserver(rec))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.post("/v1/search", json={"query": "a"})).status_code == 401
        assert (await c.post("/v1/search", json={"query": "a"})).status_code == 429
    assert rec.total("ragserve_auth_denied_total", route="/v1/search", code="401") == 1
    assert rec.total("ragserve_rate_limited_total", route="/v1/search") == 1
    assert rec.total("ragserve_errors_total", type="rate_limited", code="429") == 1


async def test_unknown_paths_share_one_route_label():
    rec = MemoryRecorder()
    async with await _client(rec) as c:
        for i in range(5):
            await c.get(f"/no/such/{i}")
        await c.get("/v1/documents/a")
    assert rec.total("ragserve_requests_total", route="other", status="404") == 5
    assert rec.total("ragserve_requests_total", route="/v1/documents/{doc_id}") == 1


def test_tenant_labels_are_capped():
    label = CappedLabel(2)
    assert [label(t) for t in ("a", "b", "c", "a", None)] == ["a", "b", "other", "a", "none"]


def test_the_log_flusher_empties_memory_handlers(tmp_path):
    target = logging.FileHandler(tmp_path / "replica.log")
    mem = logging.handlers.MemoryHandler(capacity=1000, target=target, flushLevel=logging.ERROR)
    logger = logging.getLogger("test.flusher")
    logger.addHandler(mem)
    try:
        logger.warning("one record")
        assert (tmp_path / "replica.log").read_text() == ""  # what operators saw: 0 bytes
        assert LogFlusher(loggers=("test.flusher",)).flush_once() == 1
        assert "one record" in (tmp_path / "replica.log").read_text()
    finally:
        logger.removeHandler(mem)


def test_sentry_scrub_drops_bodies_and_personal_data():
    event = {"request": {"data": {"query": SECRET_QUERY}, "query_string": "q=x",
                         "cookies": {"s": "1"},
                         "headers": {"Authorization": "Bearer k", "X-Request-ID": "r1"}},
             "user": {"ip_address": "1.2.3.4"},
             "exception": {"values": [{"stacktrace": {"frames": [{"vars": {"q": SECRET_QUERY}}]}}]},
             "breadcrumbs": {"values": [{"category": "httpx", "message": SECRET_QUERY}]}}
    out = json.dumps(scrub(event))
    assert "canary" not in out and "Bearer" not in out and "1.2.3.4" not in out
    assert "X-Request-ID" in out


def test_config_defaults_are_cheap_and_tracing_needs_an_endpoint():
    cfg = ObservabilityConfig()
    assert cfg.metrics.enabled and not cfg.tracing.enabled and cfg.sentry.dsn is None
    with pytest.raises(ValueError):
        TracingConfig(enabled=True)


def test_trace_context_travels_as_a_w3c_carrier():
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ragserve.observability import tracing

    assert tracing.inject() is None  # off: nothing added to calls
    tracing.configure_tracing(TracingConfig(enabled=True, otlp_endpoint="http://127.0.0.1:9/v1/traces",
                                            sampling_ratio=1.0), component="test")
    try:
        memory = InMemorySpanExporter()
        tracing._provider.add_span_processor(SimpleSpanProcessor(memory))
        with tracing.span("ingress"):
            carrier = tracing.inject()
        assert carrier and carrier["traceparent"].startswith("00-")
        with tracing.span("embedder.embed", parent=tracing.extract(carrier)):
            pass
        spans = {s.name: s for s in memory.get_finished_spans()}
        assert spans["embedder.embed"].parent.span_id == spans["ingress"].context.span_id
        assert spans["embedder.embed"].context.trace_id == spans["ingress"].context.trace_id
    finally:
        tracing.shutdown_tracing()



def test_a_span_is_current_in_its_block_and_records_errors_as_the_sdk_does():
    """``tracing.span`` behaves as the SDK's ``start_as_current_span``: current inside, the
    previous span current again after, an error recorded with an ERROR status, a cancellation
    (a BaseException) ending the span without either."""
    import asyncio

    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ragserve.observability import tracing

    with tracing.span("off") as s:  # tracing off: a non-recording span, nothing attached
        assert not s.is_recording() and trace.get_current_span() is trace.INVALID_SPAN
    tracing.configure_tracing(TracingConfig(enabled=True, otlp_endpoint="http://127.0.0.1:9/v1/traces",
                                            sampling_ratio=1.0), component="test")
    try:
        memory = InMemorySpanExporter()
        tracing._provider.add_span_processor(SimpleSpanProcessor(memory))
        with tracing.span("outer", attributes={"k": "v"}) as outer:
            assert trace.get_current_span() is outer
            with pytest.raises(ValueError):
                with tracing.span("failed"):
                    raise ValueError("bad input")
            assert trace.get_current_span() is outer
            with pytest.raises(asyncio.CancelledError):
                with tracing.span("cancelled"):
                    raise asyncio.CancelledError()
        assert trace.get_current_span() is trace.INVALID_SPAN
        spans = {s.name: s for s in memory.get_finished_spans()}
        assert spans["outer"].attributes["k"] == "v"
        assert spans["outer"].status.status_code is tracing.StatusCode.UNSET
        failed = spans["failed"]
        assert failed.status.status_code is tracing.StatusCode.ERROR
        assert failed.status.description == "ValueError: bad input"
        assert [e.name for e in failed.events] == ["exception"]
        assert failed.parent.span_id == spans["outer"].context.span_id
        cancelled = spans["cancelled"]
        assert cancelled.status.status_code is tracing.StatusCode.UNSET and not cancelled.events
        assert cancelled.end_time is not None
    finally:
        tracing.shutdown_tracing()

def test_sentry_sends_scrubbed_events_to_the_configured_dsn():
    """A local endpoint stands in for Sentry: what arrives has the error and no request text."""
    import gzip
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import sentry_sdk

    from ragserve.config import SentryConfig
    from ragserve.observability.errors import configure_sentry
    from scripts.local_ray import free_port

    received: list[bytes] = []
    KEY = "sk-" + "l1ve"  # noqa: N806 - built, so the source lines Sentry sends do not hold it

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            received.append(body)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert configure_sentry(SentryConfig(dsn=f"http://pub@127.0.0.1:{port}/1"),
                                component="test")
        with sentry_sdk.new_scope() as scope:
            # what a web integration attaches: the request, with its body
            scope.add_event_processor(lambda event, hint: {**event, "request": {
                "url": "http://t/v1/query", "method": "POST", "data": {"query": SECRET_QUERY},
                "headers": {"Authorization": "Bearer " + KEY}}})
            sentry_sdk.add_breadcrumb(category="httpx", message=SECRET_QUERY)
            try:
                secret = SECRET_QUERY  # noqa: F841 - a local variable Sentry must not send
                raise RuntimeError("stage exploded")
            except RuntimeError as exc:
                sentry_sdk.capture_exception(exc)
        sentry_sdk.flush(timeout=5)
    finally:
        client = sentry_sdk.get_client()
        client.close()
        server.shutdown()
    payload = b"".join(received).decode("utf-8", "replace")
    assert "stage exploded" in payload
    assert "/v1/query" in payload  # the request is described ...
    assert "canary-7f3a" not in payload and "sk-l1ve" not in payload  # ... without content


async def test_handle_calls_are_counted_traced_and_refused_like_http_requests(caplog):
    """A notebook's ``app.search.remote(...)`` goes through the same guard and is measured as
    an HTTP request is: ``handle.<method>`` as its route label, errors by type."""
    from ragserve.edge import Guard, HandleAPI
    from ragserve.errors import InvalidRequestError

    class Denied(RagServeError):
        status_code, code = 401, "unauthenticated"

    refuse = {"on": False}

    async def check(ctx):
        if refuse["on"]:
            raise Denied("no key")

    rec = MemoryRecorder()
    p = make()
    await p.startup()
    api = HandleAPI(lambda: p, Guard([check]), observer=HttpObserver(rec))
    with caplog.at_level(logging.INFO, logger="ragserve.requests"):
        await api.search({"query": SECRET_QUERY})
    with pytest.raises(InvalidRequestError):
        await api.search({"query": "a", "top_k": -1})
    refuse["on"] = True
    with pytest.raises(Denied):
        await api.query({"query": "a"})
    assert rec.total("ragserve_requests_total", route="handle.search", status="200") == 1
    assert rec.total("ragserve_errors_total", type="invalid_request", code="422") == 1
    assert rec.total("ragserve_auth_denied_total", route="handle.query", code="401") == 1
    records = [r for r in caplog.records if r.name == "ragserve.requests"]
    assert records and records[0].fields["route"] == "handle.search"
    assert "canary-7f3a" not in caplog.text


def test_counter_buffer_hands_on_one_sum_per_series():
    from ragserve.observability.metrics import CounterBuffer

    buf = CounterBuffer()
    for _ in range(3):
        buf.add("ragserve_requests_total", 1.0, {"route": "/v1/search", "status": "200"})
    buf.add("ragserve_requests_total", 1.0, {"route": "/v1/search", "status": "429"})
    buf.add("ragserve_tokens_total", 120.0, {"direction": "prompt", "backend": "b", "model": "m"})
    handed: list[tuple] = []
    assert buf.flush(lambda name, value, labels: handed.append((name, value, labels))) == 3
    assert sorted(handed, key=str) == sorted([
        ("ragserve_requests_total", 3.0, {"route": "/v1/search", "status": "200"}),
        ("ragserve_requests_total", 1.0, {"route": "/v1/search", "status": "429"}),
        ("ragserve_tokens_total", 120.0, {"direction": "prompt", "backend": "b", "model": "m"}),
    ], key=str)
    assert buf.flush(lambda *a: handed.append(a)) == 0  # nothing twice


def test_counter_buffer_loses_nothing_under_concurrent_adds_and_survives_a_failing_sink(caplog):
    import threading

    from ragserve.observability.metrics import CounterBuffer

    buf = CounterBuffer()
    totals: dict[str, float] = {}

    def sink(name, value, labels):
        if labels["k"] == "refused":
            raise RuntimeError("backend refused")
        totals[labels["k"]] = totals.get(labels["k"], 0.0) + value

    def adder():
        for _ in range(5000):
            buf.add("c", 1.0, {"k": "a"})
            buf.add("c", 1.0, {"k": "refused"})

    threads = [threading.Thread(target=adder) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        buf.flush(sink)  # flushing while others add
    buf.flush(sink)
    assert totals == {"a": 20000.0}
    refusals = [r for r in caplog.records if "metric c dropped" in r.getMessage()]
    assert len(refusals) == 1 and "backend refused" in refusals[0].getMessage()  # once


def test_observation_buffer_hands_on_every_value_in_order_and_loses_none_to_a_flush():
    import threading

    from ragserve.observability.metrics import ObservationBuffer

    buf = ObservationBuffer()
    seen: list[tuple] = []

    def adder(k: int):
        for i in range(5000):
            buf.add("h", float(i), {"k": str(k)})

    threads = [threading.Thread(target=adder, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        buf.flush(lambda *a: seen.append(a))  # flushing while others add
    buf.flush(lambda *a: seen.append(a))
    assert len(seen) == 20000
    for k in range(4):  # each adder's values arrive, in the order it observed them
        assert [v for _, v, labels in seen if labels["k"] == str(k)] == [float(i) for i in range(5000)]
    assert buf.flush(lambda *a: seen.append(a)) == 0 and buf.dropped == 0


def test_observation_buffer_is_bounded_and_survives_a_failing_sink(caplog):
    from ragserve.observability.metrics import ObservationBuffer

    buf = ObservationBuffer(limit=3)
    for i in range(5):
        buf.add("h", float(i), {})
    assert buf.dropped == 2
    buf.add("wrong", 1.0, {"bad": "label"})  # over the limit too: dropped, not queued
    handed: list[float] = []

    def sink(name, value, labels):
        if value == 1.0:
            raise ValueError("unknown tag key 'bad'")
        handed.append(value)

    assert buf.flush(sink) == 3 and handed == [0.0, 2.0]
    buf.add("h", 1.0, {})
    buf.flush(sink)
    refusals = [r for r in caplog.records if "metric h dropped" in r.getMessage()]
    assert len(refusals) == 1 and "unknown tag key" in refusals[0].getMessage()  # once
    overflows = [r for r in caplog.records if "observations dropped" in r.getMessage()]
    assert len(overflows) == 1 and overflows[0].getMessage().startswith("3 histogram")
