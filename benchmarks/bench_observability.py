"""What metrics and tracing cost on ``/v1/search``: the same build with both off, with metrics
on and tracing at its default sampling, and with every request traced, in one run.

    .venv/bin/python benchmarks/bench_observability.py [--seconds 20] [--rounds 2] [--clients 16]

``configs/local.yaml``'s graph without a generator (``build_search_app``; the query cache off so
every request runs the stages), this project's docs ingested, spans exported over OTLP/HTTP to a
local receiver that accepts and drops them. The three settings are deployed in turn, round after
round (A B C A B C …), so the machine's drift hits them alike; each load runs ``--clients``
concurrent clients for ``--seconds``. Figures: req/s, p50, p95 (ms) per setting (median over
rounds), and each setting against "off".
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_graph import load  # noqa: E402
from benchmarks.common import QUESTIONS, RAY_ENV, ROOT, free_port  # noqa: E402


class _Sink(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("content-length") or 0))
        _Sink.received += 1
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
                res = asyncio.run(load(url, "/v1/search", list(QUESTIONS), args.clients,
                                       args.seconds, {}))
                results[name].append(res)
                print(f"round {r + 1} {name:22s} {res['rps']:7.1f} req/s  p50 {res['p50']:6.1f}"
                      f"  p95 {res['p95']:6.1f} ms  errors {res['errors']}", flush=True)
                serve.delete("ragserve")
    finally:
        serve.shutdown()
        ray.shutdown()
        sink.shutdown()

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in results[name])

    print(f"\n/v1/search, {args.clients} clients, {args.seconds:g} s x {args.rounds} rounds "
          f"(median); {_Sink.received} span exports received:")
    for name in results:
        line = (f"{name:22s} {med(name, 'rps'):7.1f} req/s  p50 {med(name, 'p50'):6.1f}  "
                f"p95 {med(name, 'p95'):6.1f} ms")
        if name != "off":
            line += (f"   vs off: req/s {med(name, 'rps') / med('off', 'rps') - 1:+.1%}, "
                     f"p50 {med(name, 'p50') / med('off', 'p50') - 1:+.1%}, "
                     f"p95 {med(name, 'p95') / med('off', 'p95') - 1:+.1%}")
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
