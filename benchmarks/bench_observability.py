"""What metrics and tracing cost on ``/v1/search``: the same build with both off, with metrics
on and tracing at its default sampling, and with every request traced, in one run.

    .venv/bin/python benchmarks/bench_observability.py [--seconds 20] [--rounds 2] [--clients 16]

``configs/local.yaml``'s graph without a generator (``build_search_app``; the query cache off so
every request runs the stages), this project's docs ingested, spans exported over OTLP/HTTP to a
local receiver that counts them. The three settings are deployed in turn, round after round
(A B C A B C …), so the machine's drift hits them alike; each load runs ``--clients``
concurrent clients for ``--seconds``. Figures per setting and round: req/s, p50, p95 (ms), the
spans exported per request, and the CPU time per request of each process (the ingress, each
stage replica, Serve's proxy and controller, and this process — the load and the receiver).
The summary gives each setting against "off" two ways: the medians over rounds compared, and
the median of the per-round ratios (each round's pair ran minutes apart, so this one is the
stricter).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_graph import load  # noqa: E402
from benchmarks.common import QUESTIONS, RAY_ENV, ROOT, free_port  # noqa: E402


class _Sink(BaseHTTPRequestHandler):
    received = 0
    spans: Counter = Counter()  # span name -> count since the last reset

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        _Sink.received += 1
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    _Sink.spans[span.name] += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def settings(endpoint: str) -> dict[str, dict]:
    tracing = {"enabled": True, "otlp_endpoint": endpoint}
    return {
        "off": {"metrics": {"enabled": False}, "tracing": {"enabled": False}},
        "on, default sampling": {"metrics": {"enabled": True}, "tracing": tracing},
        "on, 100% traced": {"metrics": {"enabled": True},
                            "tracing": {**tracing, "sampling_ratio": 1.0}},
    }


_PROCESSES = ("Ingress", "Embedder", "Retriever", "Reranker", "ProxyActor", "ServeController",
              "haproxy", "raylet", "gcs_server")


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """pid -> (component, user + system CPU seconds) of this process and Ray's."""
    import psutil

    me = os.getpid()
    out: dict[int, tuple[str, float]] = {}
    for proc in psutil.process_iter():
        try:
            cmd = " ".join(proc.cmdline())
            name = "this (load, receiver)" if proc.pid == me else next(
                (n for n in _PROCESSES if n in cmd), None)
            if name is not None:
                t = proc.cpu_times()
                out[proc.pid] = (name, t.user + t.system)
        except Exception:  # gone, or not ours to read
            pass
    return out


def cpu_per_request(before: dict, after: dict, requests: int) -> dict[str, float]:
    """CPU ms per request by component (processes alive across the load)."""
    per: Counter = Counter()
    for pid, (name, t) in after.items():
        if pid in before:
            per[name] += t - before[pid][1]
    return {name: round(v / max(requests, 1) * 1000, 3) for name, v in per.most_common()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=16)
    args = ap.parse_args()

    import ray
    from ray import serve

    from graphs.rag import build_search_app
    from ragserve.ingest.loaders import load_documents

    sink = ThreadingHTTPServer(("127.0.0.1", free_port()), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"
    tmp = Path(tempfile.mkdtemp(prefix="ragserve-obs-"))
    cfg = yaml.safe_load((ROOT / "configs/local.yaml").read_text())
    base = cfg["applications"][0]["args"]
    base["retriever"]["config"]["path"] = str(tmp / "qdrant")
    base["ingress"]["config"]["cache"].update({"queries": {"enabled": False}})
    base.pop("generator", None)
    docs = [d.model_dump(mode="json") for d in load_documents(
        [ROOT / "README.md", ROOT / "docs", ROOT / "k8s" / "README.md"], root=ROOT)]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ray.init(include_dashboard=False, log_to_driver=False, runtime_env=RAY_ENV)
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    results: dict[str, list[dict]] = {name: [] for name in settings(endpoint)}
    try:
        for r in range(args.rounds):
            for name, observability in settings(endpoint).items():
                serve.run(build_search_app({**base, "observability": observability}),
                          name="ragserve", route_prefix="/")
                with httpx.Client(base_url=url, timeout=600) as c:
                    for i in range(0, len(docs), 32):  # unchanged after the first: cheap
                        c.post("/v1/documents",
                               json={"documents": docs[i:i + 32]}).raise_for_status()
                asyncio.run(load(url, "/v1/search", list(QUESTIONS), 4, 3, {}))  # warm up
                time.sleep(1.0)  # the warm-up's spans leave (500 ms export schedule)
                _Sink.spans.clear()
                before = cpu_seconds()
                res = asyncio.run(load(url, "/v1/search", list(QUESTIONS), args.clients,
                                       args.seconds, {}))
                after = cpu_seconds()
                serve.delete("ragserve")  # replicas flush their spans as they stop
                res["cpu_ms"] = cpu_per_request(before, after, res["n"])
                res["spans"] = {k: round(v / res["n"], 2) for k, v in _Sink.spans.items()}
                results[name].append(res)
                cpu = res["cpu_ms"]
                print(f"round {r + 1} {name:22s} {res['rps']:7.1f} req/s  p50 {res['p50']:6.1f}"
                      f"  p95 {res['p95']:6.1f} ms  errors {res['errors']}  CPU/request "
                      f"{sum(cpu.values()):.2f} ms ("
                      + ", ".join(f"{k} {v:.2f}" for k, v in list(cpu.items())[:4])
                      + f")  spans/request {sum(res['spans'].values()):.2f}", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
        sink.shutdown()

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in results[name])

    def paired(name: str, key: str) -> float:
        return statistics.median(x[key] / o[key] - 1
                                 for x, o in zip(results[name], results["off"]))

    def cpu(name: str) -> float:
        return statistics.median(sum(x["cpu_ms"].values()) for x in results[name])

    print(f"\n/v1/search, {args.clients} clients, {args.seconds:g} s x {args.rounds} rounds "
          f"(median); {_Sink.received} span exports received:")
    for name in results:
        line = (f"{name:22s} {med(name, 'rps'):7.1f} req/s  p50 {med(name, 'p50'):6.1f}  "
                f"p95 {med(name, 'p95'):6.1f} ms  CPU/request {cpu(name):.2f} ms")
        if name != "off":
            line += (f"\n    vs off, medians: req/s {med(name, 'rps') / med('off', 'rps') - 1:+.1%}, "
                     f"p50 {med(name, 'p50') / med('off', 'p50') - 1:+.1%}, "
                     f"p95 {med(name, 'p95') / med('off', 'p95') - 1:+.1%}, "
                     f"CPU/request {cpu(name) / cpu('off') - 1:+.1%}"
                     f"\n    vs off, median of per-round ratios: req/s {paired(name, 'rps'):+.1%}, "
                     f"p50 {paired(name, 'p50'):+.1%}, p95 {paired(name, 'p95'):+.1%}")
            spans = results[name][-1]["spans"]
            line += "\n    spans per request (last round): " + ", ".join(
                f"{k} {v}" for k, v in sorted(spans.items()) if v >= 0.05)
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
