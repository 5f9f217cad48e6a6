"""One running graph observed the way an operator would: its own Ray with a metrics export
port, a real Prometheus scraping it, an OTLP/HTTP receiver taking its spans, and its log
files. Run by ``tests/graphs/test_observability_graph.py`` in a process of its own (it needs
a Ray started with ``_metrics_export_port``); prints one JSON report on its last line.

    .venv/bin/python -m tests.graphs.observability_scenario /tmp/workdir
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.conftest import isolated_serve_env, small_app_args, wait_until
from scripts.local_ray import export_for_ray, free_port

CANARY = "canary-q9z7 what does the embedder batch"
# recorded only when their event happens: a refusal, a breaker change, a price, a capped
# tenant label, an error in a stage, a fallback or retry (time to first token is not among
# them: whole answers record it too)
OPTIONAL_METRICS = frozenset({
    "ragserve_auth_denied_total", "ragserve_rate_limited_total",
    "ragserve_tenant_requests_total", "ragserve_generation_cost_total",
    "ragserve_generation_retries_total", "ragserve_generation_fallbacks_total",
    "ragserve_degraded_total", "ragserve_breaker_state", "ragserve_empty_results_total"})


def _plain(value) -> object:
    """An OTLP ``AnyValue`` as the Python value it holds (str, bool, int, float; else text)."""
    kind = value.WhichOneof("value")
    if kind in ("string_value", "bool_value", "int_value", "double_value"):
        return getattr(value, kind)
    return str(value)


class OtlpReceiver:
    """OTLP/HTTP traces endpoint (protobuf) keeping every span it receives."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
        spans: list[dict] = []
        self.spans = spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                for rs in req.resource_spans:
                    res = {a.key: a.value.string_value or a.value.int_value
                           for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            spans.append({
                                "name": s.name, "trace_id": s.trace_id.hex(),
                                "span_id": s.span_id.hex(), "parent": s.parent_span_id.hex(),
                                "component": res.get("ragserve.component"),
                                "pid": res.get("process.pid"),
                                "attributes": {a.key: _plain(a.value) for a in s.attributes},
                                "links": len(s.links)})
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def start_prometheus(workdir: Path, target_port: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cfg = workdir / "prometheus.yml"
    cfg.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{Path('monitoring/prometheus/ragserve-rules.yaml').resolve()}"]
scrape_configs:
  - job_name: ray
    static_configs: [{{targets: ["127.0.0.1:{target_port}"]}}]
""")
    proc = subprocess.Popen(
        [shutil.which("prometheus"), f"--config.file={cfg}",
         f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: _ok(f"http://127.0.0.1:{port}/-/ready"), timeout_s=30)
    return proc, port


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).is_success
    except httpx.HTTPError:
        return False


def main(workdir: Path) -> dict:
    import ray
    from ray import serve

    from graphs.rag import build_app
    from monitoring.build import ALERTS, PANELS
    from ragserve.observability.metrics import METRICS
    from tests.corpus import DOCUMENTS

    report: dict = {}
    receiver = OtlpReceiver()
    metrics_port = free_port()
    export_for_ray(isolated_serve_env())
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             _metrics_export_port=metrics_port,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    http_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    prom, prom_port = start_prometheus(workdir, metrics_port)
    try:
        args = small_app_args(workdir, workdir / "models")
        args["generator"]["config"] = {"backend": {"backend": "extractive"}}
        args["observability"] = {"tracing": {
            "enabled": True, "sampling_ratio": 1.0, "export_delay_s": 0.5,
            "otlp_endpoint": f"http://127.0.0.1:{receiver.port}/v1/traces"}}
        serve.run(build_app(args), name="ragserve", route_prefix="/")
        base = f"http://127.0.0.1:{http_port}"
        # RUNNING is not yet routable: HAProxy picks the ingress replica up a little later
        # (longer on a loaded machine, with another Ray beside this one in the suite).
        wait_until(lambda: _ok(f"{base}/readyz"), timeout_s=180, interval_s=1)
        with httpx.Client(base_url=base, timeout=60) as c:
            for attempt in range(4):  # a stage still loading under the suite's load: 503
                ingested = c.post("/v1/documents", json={"documents": DOCUMENTS})
                if ingested.status_code != 503:
                    break
                time.sleep(float(ingested.headers.get("retry-after", "1")) * 2 ** attempt)
            assert ingested.status_code == 200, (ingested.status_code, ingested.text[:2000])
            r = c.post("/v1/query", json={"query": CANARY, "max_tokens": 16},
                       headers={"x-request-id": "trace-me-1"})
            assert r.status_code == 200, r.text
            report["query_backends"] = r.json()["backends"]
            t0 = time.monotonic()
            for i in range(20):
                c.post("/v1/search", json={"query": f"{CANARY} {i % 5}"})
                c.post("/v1/query", json={"query": f"question {i % 3} about batching"})
            c.post("/v1/query", json={"query": f"{CANARY} stream", "stream": True})
            c.post("/v1/search", json={"query": ""})  # a 422
            report["traffic_s"] = round(time.monotonic() - t0, 2)
        # logs: within ~2 s of the last request, the replica files hold it
        time.sleep(2)
        logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
        report["replica_logs"] = {
            Path(p).name.split("_")[2]: os.path.getsize(p)
            for p in glob.glob(str(logs / "replica_ragserve_*.log"))}
        lines = []
        for p in glob.glob(str(logs / "ragserve_*.jsonl")):
            lines += [json.loads(line) for line in Path(p).read_text().splitlines() if line]
        report["json_log_records"] = len(lines)
        report["json_log_sample"] = next((x for x in lines if x.get("request_id") == "trace-me-1"),
                                         None)
        all_logs = "".join(Path(p).read_text(errors="replace")
                           for p in glob.glob(str(logs / "*")) if os.path.isfile(p))
        report["canary_in_logs"] = "canary-q9z7" in all_logs
        # metrics through Prometheus
        api = f"http://127.0.0.1:{prom_port}/api/v1"

        def query(expr: str) -> dict:
            return httpx.get(f"{api}/query", params={"query": expr}, timeout=10).json()

        def names() -> set[str]:
            return set(httpx.get(f"{api}/label/__name__/values", timeout=10).json()["data"])

        # Replicas push their metrics to Ray's agent every few seconds (one push may hold the
        # traffic's early requests, the next its last ones): wait until every metric the
        # traffic must have produced, and every core panel, is there, rather than a fixed pause.
        required = {m.name for m in METRICS} - OPTIONAL_METRICS

        def missing(present: set[str]) -> list[str]:
            return sorted(m for m in {m.name for m in METRICS}
                          if not any(n.startswith(f"ray_{m}") for n in present))

        core = [expr for p in PANELS if p.get("core") for expr, _ in p["targets"]]

        def settled() -> bool:
            if required & set(missing(names())):
                return False
            return all(query(e).get("data", {}).get("result") for e in core)

        try:
            wait_until(settled, timeout_s=90, interval_s=1)
        except TimeoutError:
            pass  # the report below says what never arrived
        present = names()
        report["ragserve_series"] = sorted(n for n in present if "ragserve" in n)
        report["missing_metrics"] = missing(present)
        # who recorded a series: the replica's tags, as Serve's own metrics carry them
        search = query('ray_ragserve_requests_total{route="/v1/search"}')
        report["request_series_labels"] = [r["metric"] for r in
                                           search.get("data", {}).get("result", [])]
        results = {}
        for p in PANELS:
            for expr, _ in p["targets"]:
                out = query(expr)
                results[expr] = {"status": out["status"], "error": out.get("error"),
                                 "series": len(out.get("data", {}).get("result", [])),
                                 "core": bool(p.get("core")), "title": p["title"]}
        for a in ALERTS:
            out = query(a["expr"])
            results[a["expr"]] = {"status": out["status"], "error": out.get("error"),
                                  "series": len(out.get("data", {}).get("result", [])),
                                  "core": False, "title": a["alert"]}
        report["expressions"] = results
        rules = httpx.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
        report["rule_health"] = {r["name"]: r["health"] for g in rules for r in g["rules"]}
        # traces: the first query's trace
        time.sleep(2)
        report["spans"] = receiver.spans
    finally:
        serve.shutdown()
        ray.shutdown()
        prom.kill()
        prom.wait(timeout=10)
    return report


if __name__ == "__main__":
    work = Path(sys.argv[1])
    work.mkdir(parents=True, exist_ok=True)
    out = main(work)
    print(json.dumps(out, default=str))
