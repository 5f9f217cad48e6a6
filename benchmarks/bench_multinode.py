"""Two Ray nodes on one machine: /v1/search throughput and latency with the graph's stages spread
across a head and a worker node, against the same replicas on one node with the same total
CPUs; then the recovery after the worker node is killed under load.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_multinode.py --seconds 20

Layouts (``tests/graphs/multinode_scenario.py``, placement by ``ray_actor_options.resources``):
``spread`` — head {CPU 2, ingress_node 1, model_node 1, data_node 1}, worker {CPU 2,
ingress_node 1, model_node 1}: one ingress and one embedder replica per node, retriever,
reranker and generator on the head; ``one-node`` — a single node {CPU 4} with the same five
deployments and replica counts. Query cache off (no Redis), unique queries, ``--clients``
threads each with one request in flight. Each layout runs in a process of its own (one
cluster per driver). Both "nodes" share this machine's cores, so the comparison shows what
crossing raylets costs, not what a second machine adds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT, pct  # noqa: E402

LAYOUTS = ("spread", "one-node")


def run_layout(layout: str, seconds: float, clients: int, kill: bool) -> dict:
    from ray import serve

    from graphs.rag import build_app
    from scripts.local_ray import LocalCluster
    from tests.conftest import wait_until
    from tests.graphs.multinode_scenario import (
        ENV_VARS, HEAD, WORKER, Load, ingest, node_loss, placed_args, placement, ready)

    tmp = Path(tempfile.mkdtemp(prefix="ragserve-multinode-"))
    if layout == "spread":
        cluster = LocalCluster(HEAD, [WORKER], env_vars=ENV_VARS)
    else:  # the same CPUs and custom resources, the same app config, on one node
        one = {k: HEAD.get(k, 0) + WORKER.get(k, 0) for k in {*HEAD, *WORKER}}
        cluster = LocalCluster(one, [], env_vars=ENV_VARS)
    out: dict = {"layout": layout}
    try:
        t0 = time.monotonic()
        base = cluster.start()
        serve.run(build_app(placed_args(tmp, tmp / "models", None)),
                  name="multinode", route_prefix="/")
        wait_until(lambda: ready(base), timeout_s=300, interval_s=1)
        out["ready_s"] = round(time.monotonic() - t0, 1)
        out["placement"] = placement(cluster)
        ingest(base)
        warm = Load(base, clients).start()
        time.sleep(5)
        warm.stop()
        load = Load(base, clients).start()
        time.sleep(seconds)
        load.stop()
        done = load.results
        lat = [(t1 - t0) * 1000 for t0, t1, o, _ in done if o == 200]
        span = max(t1 for _, t1, _, _ in done) - min(t0 for t0, *_ in done)
        out.update(requests=len(done), ok=len(lat), rps=round(len(lat) / span, 1),
                   p50_ms=round(pct(lat, 50), 1), p95_ms=round(pct(lat, 95), 1))
        if kill and layout == "spread":
            loss = node_loss(cluster, base, cluster.workers[0], WORKER)
            out["node_loss"] = {k: loss[k] for k in (
                "requests", "in_flight_at_kill", "failed", "recovery_s",
                "replacement_joined_s", "replicas_restored_s",
                "longest_gap_between_answers_s")}
    finally:
        cluster.shutdown()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measured load per layout")
    ap.add_argument("--clients", type=int, default=4, help="client threads")
    ap.add_argument("--no-kill", action="store_true", help="skip the node-loss phase")
    ap.add_argument("--layout", choices=LAYOUTS, help=argparse.SUPPRESS)  # one child process
    args = ap.parse_args()
    if args.layout:
        print(json.dumps(run_layout(args.layout, args.seconds, args.clients, not args.no_kill)))
        return 0

    figures = []
    for layout in LAYOUTS:
        cmd = [sys.executable, "-m", "benchmarks.bench_multinode", "--layout", layout,
               "--seconds", str(args.seconds), "--clients", str(args.clients)]
        if args.no_kill:
            cmd.append("--no-kill")
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if r.returncode != 0:
            print(r.stderr[-4000:], file=sys.stderr)
            return r.returncode
        figures.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(f"/v1/search, {args.clients} clients, {args.seconds:g} s per layout, query cache off, "
          f"{os.cpu_count()} cores shared by every node")
    print(f"{'layout':10} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'requests':>9}  placement")
    for f in figures:
        where = ", ".join(f"{d}: {'+'.join(n)}" for d, n in sorted(f["placement"].items()))
        print(f"{f['layout']:10} {f['rps']:7.1f} {f['p50_ms']:8.1f} {f['p95_ms']:8.1f} "
              f"{f['requests']:9d}  {where}")
    for f in figures:
        if "node_loss" in f:
            n = f["node_loss"]
            print(f"worker node killed under load ({f['layout']}): {n['requests']} requests, "
                  f"{len(n['failed'])} failed ({[x['outcome'] for x in n['failed']]}), "
                  f"{n['in_flight_at_kill']} in flight at the kill; first success after the "
                  f"kill {n['recovery_s']} s; replacement node joined {n['replacement_joined_s']}"
                  f" s, lost replicas running on it {n['replicas_restored_s']} s; longest gap "
                  f"between answers {n['longest_gap_between_answers_s']} s")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
