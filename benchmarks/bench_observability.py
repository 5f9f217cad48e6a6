"""What metrics and tracing cost on ``/v1/search``: the same build with both off, with metrics
on and tracing at its default sampling, and with every request traced, in one run.

    .venv/bin/python benchmarks/bench_observability.py [--seconds 5] [--rounds 12] [--clients 16]
    .venv/bin/python benchmarks/bench_observability.py --mixed [--seconds 10] [--rounds 12]

``configs/local.yaml``'s graph without a generator (``build_search_app``; the query cache off so
every request runs the stages), deployed three times side by side, one application per setting
(``/off``, ``/default``, ``/traced``), each with this project's docs ingested; spans are
exported over OTLP/HTTP to a local receiver (each setting under its own ``service.name``).
The load (``--clients`` concurrent clients) then visits the settings in turn for ``--seconds``
each, round after round, the order rotated every round: a pair compared is seconds apart, not
minutes, and no setting is always first. (This machine's speed drifts by 1.3-2x within minutes;
redeploying a setting per round, as this benchmark did before 2026-12-03, measured the drift as
much as the setting.)

``--mixed`` takes the drift out altogether: every client sends its requests to the three
settings in turn, so the three share every moment of the machine, fast or slow. Per round and
setting it reports p50, p95 and the CPU time per request of that setting's own replicas (its
ingress and retriever), and once per round the CPU per request of the processes the settings
share (Serve's proxy, haproxy, the controller, the load). A setting's cost is its replicas' CPU
per request above "off"'s, as a share of a whole request's (off's replicas plus the shared
processes); on a CPU-bound machine that share is the capacity it takes. Req/s is not split by
setting in this mode (the clients split their requests evenly), and the latencies it prints are
not a deployment's own: the settings' replicas compete for the same two cores, the kernel
shares the CPU between them evenly, and a setting that needs a few per cent more CPU per
request queues far more than it would alone — the summary compares CPU only.

Figures per setting and round (turns): req/s, p50, p95 (ms), and the CPU time per request of the
processes that serve it (its application's replicas, Serve's proxy, haproxy and controller,
and this process — the load and the receiver). The summary gives each setting against "off"
as the median of the per-round ratios with their interquartile range, and the spans exported
per request.
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
from ragserve.config import TracingConfig  # noqa: E402


class _Sink(BaseHTTPRequestHandler):
    """The collector's stand-in. A real one runs elsewhere; this one shares the load's cores,
    so it only keeps each export's bytes while the load runs and decodes them afterwards
    (``spans``) — decoding ~800 spans/s would otherwise tax the setting it counts."""

    received = 0
    bodies: list[bytes] = []  # exports since the last ``spans()``

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        _Sink.bodies.append(self.rfile.read(int(self.headers.get("content-length") or 0)))
        _Sink.received += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    @staticmethod
    def spans() -> Counter:
        """(service.name, span name) -> count over the exports kept since the last call (then
        forgotten)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        names: Counter = Counter()
        bodies, _Sink.bodies = _Sink.bodies, []
        for body in bodies:
            export = ExportTraceServiceRequest()
            export.ParseFromString(body)
            for resource in export.resource_spans:
                service = next((a.value.string_value for a in resource.resource.attributes
                                if a.key == "service.name"), "")
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        names[service, span.name] += 1
        return names

    def log_message(self, *args) -> None:
        pass


def settings(endpoint: str) -> dict[str, dict]:
    """Route prefix -> the application's ``observability`` section."""
    def traced(ratio: float | None, key: str) -> dict:
        cfg = {"enabled": True, "otlp_endpoint": endpoint, "service_name": f"ragserve-{key}"}
        return cfg if ratio is None else {**cfg, "sampling_ratio": ratio}
    return {
        "off": {"metrics": {"enabled": False}, "tracing": {"enabled": False}},
        "default": {"metrics": {"enabled": True}, "tracing": traced(None, "default")},
        "traced": {"metrics": {"enabled": True}, "tracing": traced(1.0, "traced")},
    }


EXPORT_WAIT_S = TracingConfig().export_delay_s + 1.0
"""Long enough for every span finished so far to have been sent (the default export delay)."""

LABELS = {"off": "off", "default": "on, default sampling", "traced": "on, 100% traced"}
_SHARED = ("ProxyActor", "ServeController", "haproxy", "raylet", "gcs_server", "DashboardAgent",
           "dashboard/agent.py", "runtime_env/agent")


def cpu_seconds(app: str) -> dict[int, tuple[str, float]]:
    """pid -> (component, user + system CPU seconds) of the processes serving ``app``: its
    replicas, Serve's and Ray's shared processes, and this one (the load, the receiver)."""
    import psutil

    me = os.getpid()
    out: dict[int, tuple[str, float]] = {}
    for proc in psutil.process_iter():
        try:
            cmd = " ".join(proc.cmdline())
            if proc.pid == me:
                name = "this (load, receiver)"
            elif f"ServeReplica:{app}:" in cmd:
                name = cmd.split(f"ServeReplica:{app}:", 1)[1].split(".")[0].split()[0]
            else:
                name = next((n for n in _SHARED if n in cmd), None)
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


def replica_cpu(app: str) -> dict[int, float]:
    """pid -> CPU seconds of ``app``'s own replicas (its ingress and stages)."""
    return {pid: t for pid, (name, t) in cpu_seconds(app).items()
            if name not in _SHARED and name != "this (load, receiver)"}


def shared_cpu() -> dict[int, float]:
    """pid -> CPU seconds of what every application shares (Serve, Ray, the load)."""
    return {pid: t for pid, (name, t) in cpu_seconds("-none-").items()}


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(t - before[pid] for pid, t in after.items() if pid in before)


async def mixed_load(url: str, paths: dict[str, str], queries: list[str], clients: int,
                     seconds: float) -> dict[str, dict]:
    """``clients`` clients for ``seconds``, each sending its requests to the settings in turn
    (client k's j-th request to setting (k + j) mod n): every setting is served throughout."""
    keys = list(paths)
    lat: dict[str, list[float]] = {k: [] for k in keys}
    errors: Counter = Counter()
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(
            max_connections=clients, max_keepalive_connections=clients)) as c:
        async def worker(k: int) -> None:
            j = 0
            while time.monotonic() < deadline:
                key = keys[(k + j) % len(keys)]
                t = time.perf_counter()
                try:
                    r = await c.post(paths[key], json={"query": queries[(k + j * clients)
                                                                          % len(queries)]})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    lat[key].append((time.perf_counter() - t) * 1000)
                else:
                    errors[key] += 1
                j += 1

        await asyncio.gather(*(worker(k) for k in range(clients)))
    return {k: {"n": len(v), "errors": errors[k],
                "p50": statistics.median(v) if v else 0.0,
                "p95": statistics.quantiles(v, n=20)[18] if len(v) > 1 else 0.0}
            for k, v in lat.items()}


def run_mixed(url: str, setups: dict, rounds: int, clients: int, seconds: float) -> list[dict]:
    """Rounds of the mixed load; per round and setting: latencies and replica CPU/request."""
    out = []
    for r in range(rounds):
        before = {k: replica_cpu(f"obs-{k}") for k in setups}
        shared0 = shared_cpu()
        res = asyncio.run(mixed_load(url, {k: f"/{k}/v1/search" for k in setups},
                                     list(QUESTIONS), clients, seconds))
        shared = _spent(shared0, shared_cpu())
        total = sum(x["n"] + x["errors"] for x in res.values())
        for k in setups:
            res[k]["cpu_ms"] = _spent(before[k], replica_cpu(f"obs-{k}")) \
                / max(res[k]["n"] + res[k]["errors"], 1) * 1000
        res["shared_cpu_ms"] = shared / max(total, 1) * 1000
        out.append(res)
        print(f"round {r + 1:2d} " + "  ".join(
            f"{k}: p50 {res[k]['p50']:6.1f} p95 {res[k]['p95']:6.1f} ms "
            f"CPU {res[k]['cpu_ms']:.2f} ms (n {res[k]['n']}, err {res[k]['errors']})"
            for k in setups) + f"  shared {res['shared_cpu_ms']:.2f} ms/request", flush=True)
    return out


def report_mixed(rounds: list[dict], setups: dict, spans: Counter, args) -> None:
    print(f"\n/v1/search, {args.clients} clients sending to the three settings in turn, "
          f"{args.seconds:g} s x {args.rounds} rounds; {_Sink.received} span exports received")
    for key in setups:
        p50 = statistics.median(x[key]["p50"] for x in rounds)
        p95 = statistics.median(x[key]["p95"] for x in rounds)
        cpu = statistics.median(x[key]["cpu_ms"] for x in rounds)
        line = (f"{LABELS[key]:22s} median p50 {p50:6.1f}  p95 {p95:6.1f} ms  "
                f"replica CPU/request {cpu:.2f} ms")
        if key == "off":
            whole = statistics.median(x["off"]["cpu_ms"] + x["shared_cpu_ms"] for x in rounds)
            line += f" (a whole request, shared processes included: {whole:.2f} ms)"
        else:
            def q(f):
                lo, m, hi = quartiles([f(x) for x in rounds])
                return f"{m:+.1%} [{lo:+.1%}, {hi:+.1%}]"
            line += ("\n    vs off, per-round, median [interquartile range]: replica CPU "
                     + q(lambda x: x[key]["cpu_ms"] / x["off"]["cpu_ms"] - 1)
                     + "; added CPU as a share of a whole request "
                     + q(lambda x: (x[key]["cpu_ms"] - x["off"]["cpu_ms"])
                         / (x["off"]["cpu_ms"] + x["shared_cpu_ms"])))
            n = sum(x[key]["n"] for x in rounds)
            mine = sum(v for (service, _), v in spans.items() if service == f"ragserve-{key}")
            line += f"\n    spans per request: {mine / max(n, 1):.3f}"
        print(line)


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return q[0], statistics.median(xs), q[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5, help="one setting's load per round")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--mixed", action="store_true",
                    help="every client sends to the three settings in turn (see above)")
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
    base["ingress"]["config"]["cache"].update({"queries": {"enabled": False}})
    base.pop("generator", None)
    docs = [d.model_dump(mode="json") for d in load_documents(
        [ROOT / "README.md", ROOT / "docs", ROOT / "k8s" / "README.md"], root=ROOT)]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Three applications' replicas reserve three times the CPUs one does: Ray is told of
    # enough logical CPUs for all of them.
    ray.init(num_cpus=3 * (os.cpu_count() or 2), include_dashboard=False, log_to_driver=False,
             runtime_env=RAY_ENV)
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    setups = settings(endpoint)
    results: dict[str, list[dict]] = {key: [] for key in setups}
    spans: Counter = Counter()
    try:
        for key, observability in setups.items():
            args_ = {**base, "observability": observability,
                     "retriever": {**base["retriever"], "config": {
                         **base["retriever"]["config"], "path": str(tmp / f"qdrant-{key}")}}}
            serve.run(build_search_app(args_), name=f"obs-{key}", route_prefix=f"/{key}")
            with httpx.Client(base_url=url, timeout=600) as c:
                for i in range(0, len(docs), 32):
                    c.post(f"/{key}/v1/documents",
                           json={"documents": docs[i:i + 32]}).raise_for_status()
            asyncio.run(load(url, f"/{key}/v1/search", list(QUESTIONS), 4, 3, {}))  # warm up
        time.sleep(EXPORT_WAIT_S)  # the warm-ups' spans leave (export_delay_s)
        _Sink.spans()
        keys = list(setups) if not args.mixed else []
        mixed = run_mixed(url, setups, args.rounds, args.clients, args.seconds) \
            if args.mixed else []
        for r in range(args.rounds if keys else 0):
            order = keys[r % len(keys):] + keys[:r % len(keys)]
            for key in order:
                before = cpu_seconds(f"obs-{key}")
                res = asyncio.run(load(url, f"/{key}/v1/search", list(QUESTIONS),
                                       args.clients, args.seconds, {}))
                after = cpu_seconds(f"obs-{key}")
                res["cpu_ms"] = cpu_per_request(before, after, res["n"] + res["errors"])
                results[key].append(res)
                cpu = res["cpu_ms"]
                print(f"round {r + 1:2d} {LABELS[key]:22s} {res['rps']:7.1f} req/s  "
                      f"p50 {res['p50']:6.1f}  p95 {res['p95']:6.1f} ms  errors {res['errors']}  "
                      f"CPU/request {sum(cpu.values()):.2f} ms ("
                      + ", ".join(f"{k} {v:.2f}" for k, v in list(cpu.items())[:6]) + ")",
                      flush=True)
        time.sleep(EXPORT_WAIT_S)
        spans = _Sink.spans()
    finally:
        serve.shutdown()
        ray.shutdown()
        sink.shutdown()

    if args.mixed:
        report_mixed(mixed, setups, spans, args)
        return 0

    def ratios(key: str, metric: str) -> tuple[float, float, float]:
        if metric == "cpu":
            pairs = [(sum(x["cpu_ms"].values()), sum(o["cpu_ms"].values()))
                     for x, o in zip(results[key], results["off"])]
        else:
            pairs = [(x[metric], o[metric]) for x, o in zip(results[key], results["off"])]
        return quartiles([a / b - 1 for a, b in pairs])

    def med(key: str, metric: str) -> float:
        if metric == "cpu":
            return statistics.median(sum(x["cpu_ms"].values()) for x in results[key])
        return statistics.median(x[metric] for x in results[key])

    print(f"\n/v1/search, {args.clients} clients, {args.seconds:g} s per setting x "
          f"{args.rounds} rounds; {_Sink.received} span exports received")
    for key in setups:
        line = (f"{LABELS[key]:22s} median {med(key, 'rps'):7.1f} req/s  p50 {med(key, 'p50'):6.1f}"
                f"  p95 {med(key, 'p95'):6.1f} ms  CPU/request {med(key, 'cpu'):.2f} ms")
        if key != "off":
            line += "\n    vs off, per-round ratios, median [interquartile range]: " + ", ".join(
                f"{label} {m:+.1%} [{lo:+.1%}, {hi:+.1%}]"
                for label, metric in (("req/s", "rps"), ("p50", "p50"), ("p95", "p95"),
                                      ("CPU/request", "cpu"))
                for lo, m, hi in [ratios(key, metric)])
            n = sum(x["n"] for x in results[key])
            mine = {name: v for (service, name), v in spans.items()
                    if service == f"ragserve-{key}"}
            line += (f"\n    spans per request: {sum(mine.values()) / max(n, 1):.3f} ("
                     + ", ".join(f"{k} {v / max(n, 1):.3f}" for k, v in sorted(mine.items())
                                 if v / max(n, 1) >= 0.005) + ")")
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
