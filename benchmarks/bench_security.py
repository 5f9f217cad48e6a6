"""The cost of security on ``/v1/search``: the same build with keys, limits and tenant filters
on against off, in one run, interleaved.

One Ray, two applications of ``configs/local.yaml``'s graph (caches off, extractive generator:
search never calls it), each with its own index of the same documents:

- ``open`` at ``/open``: no keys (tenant ``default``, every scope);
- ``secure`` at ``/secure``: a key (tenant ``acme``, ACL groups ``[sales]``) checked on every
  request (SHA-256 lookup), its request limit counted (moving window, in memory: no Redis),
  the tenant/ACL filter applied in the retriever (half the documents carry ``acl: [sales]``,
  half none), and an audit record per retrieval (the ``ragserve.audit`` logger).

Load alternates between them in ``--seconds`` windows in ABBA order for ``--rounds`` rounds at
``--clients`` concurrent clients; latencies are pooled per side. Prints p50, p95, req/s per side
and the secure/open ratios, with the load average.

    .venv/bin/python benchmarks/bench_security.py [--corpus ../shared/data/scifact --docs 1000]
        [--clients 16] [--seconds 8] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_graph import documents  # noqa: E402
from benchmarks.common import RAY_ENV, ROOT, SERVE_MODE, free_port, pct  # noqa: E402


async def window(url: str, queries: list[str], clients: int, seconds: float, headers: dict,
                 body: dict, lat: list[float]) -> tuple[int, int, float]:
    ok = errors = 0
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers, limits=httpx.Limits(
            max_connections=clients, max_keepalive_connections=clients)) as c:
        async def worker(k: int) -> None:
            nonlocal ok, errors
            i = k
            while time.monotonic() < deadline:
                t = time.perf_counter()
                try:
                    r = await c.post("/v1/search", json={"query": queries[i % len(queries)],
                                                         **body})
                    good = r.status_code == 200
                except httpx.HTTPError:
                    good = False
                if good:
                    lat.append((time.perf_counter() - t) * 1000)
                    ok += 1
                else:
                    errors += 1
                i += clients

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        return ok, errors, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=4, help="ABBA rounds (each: 4 windows)")
    args = ap.parse_args()
    docs, queries = documents(args.corpus, args.docs)
    tmp = Path(tempfile.mkdtemp(prefix="ragserve-sec-"))
    admin_key, reader_key = "rsk_" + secrets.token_hex(32), "rsk_" + secrets.token_hex(32)

    import ray
    from ray import serve

    from graphs.rag import build_app

    def app_args(name: str, secure: bool) -> dict:
        cfg = yaml.safe_load((ROOT / "configs/local.yaml").read_text())
        a = cfg["applications"][0]["args"]
        a["retriever"]["config"]["path"] = str(tmp / name)
        a["generator"]["config"] = {"backend": {"backend": "extractive"}}
        a["ingress"]["config"]["cache"].update(
            {"queries": {"enabled": False}, "embeddings": {"enabled": False}})
        if secure:
            a["ingress"]["config"]["security"] = {
                "keys": [
                    {"id": "bench-admin", "tenant": "acme", "key": {"value": admin_key},
                     "scopes": ["admin", "search", "ingest", "delete"]},
                    {"id": "bench-reader", "tenant": "acme", "key": {"value": reader_key},
                     "scopes": ["search"], "acl_groups": ["sales"],
                     "limits": {"requests_per_minute": 10_000_000}}]}
        return a

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # Two graphs: logical CPUs for both (load reaches one at a time).
    ray.init(num_cpus=max(8, 2 * (os.cpu_count() or 1)), include_dashboard=False,
             log_to_driver=False, runtime_env=RAY_ENV)
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    sides = {"open": {}, "secure": {"authorization": f"Bearer {reader_key}"}}
    try:
        for name in sides:
            serve.run(build_app(app_args(name, name == "secure")), name=name,
                      route_prefix=f"/{name}")
        for name in sides:
            hdr = {"authorization": f"Bearer {admin_key}"} if name == "secure" else {}
            acl_docs = [{**d, "acl": ["sales"]} if i % 2 else d for i, d in enumerate(docs)]
            with httpx.Client(base_url=f"{base}/{name}", timeout=600, headers=hdr) as c:
                for i in range(0, len(docs), 64):
                    c.post("/v1/documents",
                           json={"documents": acl_docs[i:i + 64]}).raise_for_status()
        body = {"top_k": 20, "rerank_top_n": 5}
        lat: dict[str, list[float]] = {n: [] for n in sides}
        tot = {n: [0, 0, 0.0] for n in sides}
        for name in sides:  # warm
            asyncio.run(window(f"{base}/{name}", queries, 4, 2, sides[name], body, []))
        load0 = os.getloadavg()
        order = ["open", "secure", "secure", "open"]
        for r in range(args.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                ok, err, wall = asyncio.run(window(f"{base}/{name}", queries, args.clients,
                                                   args.seconds, sides[name], body, lat[name]))
                tot[name][0] += ok
                tot[name][1] += err
                tot[name][2] += wall
        load1 = os.getloadavg()
    finally:
        serve.shutdown()
        ray.shutdown()
    print(f"Serve mode {SERVE_MODE}; {len(docs)} documents; {args.clients} clients; "
          f"{args.rounds} ABBA rounds of {args.seconds:g} s windows")
    res = {}
    for name in sides:
        ok, err, wall = tot[name]
        res[name] = {"p50": pct(lat[name], 50), "p95": pct(lat[name], 95), "rps": ok / wall,
                     "n": ok, "errors": err}
        print(f"{name:7s} n={ok:<6d} errors={err:<3d} {ok / wall:7.1f} req/s  "
              f"p50={res[name]['p50']:7.1f} p95={res[name]['p95']:7.1f} ms")
    o, s = res["open"], res["secure"]
    print(f"secure/open: p50 {s['p50'] / o['p50']:.3f}x  p95 {s['p95'] / o['p95']:.3f}x  "
          f"req/s {s['rps'] / o['rps']:.3f}x (goal: cost <= 5%)")
    print(f"load average before {load0[0]:.2f}, after {load1[0]:.2f} ({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
