"""The graph against a plain pipeline, and the embedder autoscaling under a load ramp.

    benchmarks/peers/setup.sh langchain         # once: .venv-langchain
    .venv/bin/python benchmarks/bench_graph.py [--corpus ../shared/data/scifact --docs 1000]

1. ragserve (``configs/local.yaml``'s graph, index in a temp folder, the caches off so that
   every request runs the pipeline): ``/v1/search`` at 1, 4, 16 and 32 concurrent clients,
   and ``/v1/query`` at 1 and 4 (the 135M CPU model answers in seconds: more clients only
   queue behind it).
2. The load ramp: 1 → 32 clients on ``/v1/search`` for ``--ramp-s`` seconds, then idle; the
   Embedder's replica count is logged every second until it is back to its minimum.
3. The peer (``benchmarks/peers/langchain_app.py``): a LangChain retriever over the same Qdrant
   collection (opened after ragserve has released it) with the same model in one FastAPI
   process, the same ``/v1/search`` load.

Each load level runs ``--seconds`` seconds; figures are requests/s, p50/p95/p99 latency, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (  # noqa: E402
    QUESTIONS, RAY_ENV, ROOT, SERVE_MODE, cpu_report, free_port, pct, process_cpu_seconds,
    wait_http)


class _SkipRamp(Exception):
    pass


def documents(corpus: str | None, n: int) -> tuple[list[dict], list[str]]:
    if corpus:
        docs, queries = [], []
        with open(Path(corpus) / "corpus.jsonl", encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                docs.append({"id": f"d{d['_id']}", "text": f"{d.get('title', '')}\n\n{d['text']}"})
                if len(docs) >= n:
                    break
        with open(Path(corpus) / "queries.jsonl", encoding="utf-8") as f:
            queries = [json.loads(line)["text"] for line in f][:500]
        return docs, queries
    from ragserve.ingest.loaders import load_documents

    docs = [d.model_dump(mode="json") for d in load_documents(
        [ROOT / "README.md", ROOT / "docs", ROOT / "k8s" / "README.md"], root=ROOT)]
    return docs, list(QUESTIONS)


async def load(url: str, path: str, queries: list[str], clients: int, seconds: float,
               extra: dict, field: str = "query", profile: bool = False) -> dict:
    lat: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(
            max_connections=clients, max_keepalive_connections=clients)) as c:
        async def worker(k: int):
            nonlocal errors
            i = k
            while time.monotonic() < deadline:
                t = time.perf_counter()
                try:
                    r = await c.post(path, json={field: queries[i % len(queries)], **extra})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    lat.append((time.perf_counter() - t) * 1000)
                else:
                    errors += 1
                i += clients

        cpu0 = process_cpu_seconds() if profile else {}
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        wall = time.perf_counter() - t0
        if profile:
            print("   " + cpu_report(cpu0, process_cpu_seconds(), len(lat) + errors), flush=True)
    return {"clients": clients, "n": len(lat), "rps": len(lat) / wall, "errors": errors,
            "p50": pct(lat, 50) if lat else 0, "p95": pct(lat, 95) if lat else 0,
            "p99": pct(lat, 99) if lat else 0, "mean": statistics.mean(lat) if lat else 0}


def line(name: str, path: str, r: dict) -> str:
    return (f"{name:10s} {path:11s} clients={r['clients']:<3d} n={r['n']:<5d} "
            f"{r['rps']:7.1f} req/s  p50={r['p50']:7.1f} p95={r['p95']:7.1f} "
            f"p99={r['p99']:7.1f} ms  errors={r['errors']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--clients", default="1,4,16,32")
    ap.add_argument("--ramp-s", type=float, default=45)
    ap.add_argument("--skip-query", action="store_true")
    ap.add_argument("--ramp-path", default="/v1/search", choices=["/v1/search", "/v1/embeddings"],
                    help="/v1/embeddings loads the embedder alone (ingress → embedder)")
    ap.add_argument("--ramp-only", action="store_true", help="only the autoscaling ramp")
    ap.add_argument("--no-peer", action="store_true", help="ragserve only")
    ap.add_argument("--embedder-runtime", choices=["torch", "onnx"], default=None,
                    help="override configs/local.yaml's embedder runtime")
    ap.add_argument("--embedder-quantize", choices=["none", "int8"], default=None,
                    help="override configs/local.yaml's embedder quantisation (int8: onnx only)")
    ap.add_argument("--profile", action="store_true",
                    help="print CPU per request by process at each load level")
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    print(f"Serve mode: {SERVE_MODE} (RAGSERVE_SERVE_MODE)")
    docs, queries = documents(args.corpus, args.docs)
    tmp = Path(tempfile.mkdtemp(prefix="ragserve-graph-"))
    search_body = {"top_k": 20, "rerank_top_n": 5}
    rows: list[str] = []

    import ray
    from ray import serve

    from graphs.rag import build_app
    from ragserve.models import resolve_model

    cfg = yaml.safe_load((ROOT / "configs/local.yaml").read_text())
    app_args = cfg["applications"][0]["args"]
    app_args["retriever"]["config"]["path"] = str(tmp / "qdrant")
    if args.embedder_runtime:
        app_args["embedder"]["config"]["runtime"] = args.embedder_runtime
    if args.embedder_quantize:
        app_args["embedder"]["config"]["quantize"] = args.embedder_quantize
    print(f"embedder runtime: {app_args['embedder']['config'].get('runtime', 'torch')}, "
          f"quantize: {app_args['embedder']['config'].get('quantize', 'none')}")
    app_args["ingress"]["config"]["cache"].update(
        {"queries": {"enabled": False}, "embeddings": {"enabled": False}})
    gen = app_args["generator"]["config"]["backend"]
    gen["cache_dir"] = str((ROOT / ".ragserve" / "models").resolve())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ray.init(include_dashboard=False, log_to_driver=False,
             runtime_env=RAY_ENV)
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    try:
        serve.run(build_app(app_args), name="ragserve", route_prefix="/")
        with httpx.Client(base_url=url, timeout=600) as c:
            t = time.perf_counter()
            for i in range(0, len(docs), 64):
                c.post("/v1/documents", json={"documents": docs[i:i + 64]}).raise_for_status()
            print(f"ingested {len(docs)} documents in {time.perf_counter() - t:.1f} s")
        asyncio.run(load(url, "/v1/search", queries, 4, 3, search_body))  # warm
        for clients in ([] if args.ramp_only else levels):
            rows.append(line("ragserve", "/v1/search",
                             asyncio.run(load(url, "/v1/search", queries, clients, args.seconds,
                                              search_body, profile=args.profile))))
            print(rows[-1], flush=True)
        for mode in (() if args.ramp_only else ("dense",)):
            r = asyncio.run(load(url, "/v1/search", queries, 16, args.seconds,
                                 {**search_body, "mode": mode}))
            rows.append(line(f"rs-{mode}", "/v1/search", r))
            print(rows[-1], flush=True)
        if not (args.skip_query or args.ramp_only):
            for clients in (1, 4):
                r = asyncio.run(load(url, "/v1/query", queries, clients, max(args.seconds, 30),
                                     {"max_tokens": 64, "rerank_top_n": 4}))
                rows.append(line("ragserve", "/v1/query", r))
                print(rows[-1], flush=True)

        # ---- autoscaling under a ramp (--ramp-s 0 skips it)
        if args.ramp_s <= 0:
            raise _SkipRamp
        counts: list[tuple[float, int, int]] = []
        stop = threading.Event()
        t0 = time.monotonic()

        def watch():
            while not stop.is_set():
                dep = serve.status().applications["ragserve"].deployments["Embedder"]
                running = dep.replica_states.get("RUNNING", 0)
                total = sum(dep.replica_states.values())
                counts.append((time.monotonic() - t0, running, total))
                time.sleep(1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        ramp = []
        ramp_body = search_body if args.ramp_path == "/v1/search" else {}
        for clients in (1, 8, 32):
            ramp.append(asyncio.run(load(url, args.ramp_path, queries, clients, args.ramp_s / 3,
                                         ramp_body, field="input" if ramp_body == {} else "query")))
        load_end = time.monotonic() - t0
        downscale = app_args["embedder"]["deployment"]["autoscaling_config"]["downscale_delay_s"]
        deadline = time.monotonic() + downscale + 60
        while time.monotonic() < deadline:
            time.sleep(2)
            if counts and counts[-1][1] == 1 and max(c[1] for c in counts) > 1 and \
                    counts[-1][0] > load_end + 5:
                break
        stop.set()
        watcher.join()
        changes = [(round(t), r, tot) for i, (t, r, tot) in enumerate(counts)
                   if i == 0 or (r, tot) != counts[i - 1][1:]]
        print(f"autoscaling: {args.ramp_path} load 1→8→32 clients for {load_end:.0f} s, then idle; Embedder "
              f"replicas (t s, running, total) at each change: {changes}")
        print("   ramp: " + "; ".join(f"{r['clients']} clients {r['rps']:.1f} req/s "
                                      f"p95 {r['p95']:.0f} ms" for r in ramp))
    except _SkipRamp:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()

    # ---- the LangChain peer over the same collection
    venv = ROOT / ".venv-langchain"
    if args.ramp_only or args.no_peer:
        print("\n".join(["", "summary:", *rows]))
        return 0
    if not (venv / "bin" / "python").exists():
        print("peer missing: run benchmarks/peers/setup.sh langchain")
        return 0
    peer_port = free_port()
    model_dir = str(resolve_model(app_args["embedder"]["config"]["model"]).path)
    peer = subprocess.Popen(
        [str(venv / "bin" / "python"), str(ROOT / "benchmarks/peers/langchain_app.py"),
         "--qdrant", str(tmp / "qdrant"), "--collection",
         app_args["retriever"]["config"].get("collection", "ragserve"), "--model", model_dir,
         "--port", str(peer_port)],
        env={**os.environ}, stdout=open(tmp / "peer.log", "w"), stderr=subprocess.STDOUT)
    try:
        peer_url = f"http://127.0.0.1:{peer_port}"
        wait_http(peer_url + "/healthz", proc=peer)
        asyncio.run(load(peer_url, "/v1/search", queries, 4, 3, search_body))  # warm
        for clients in levels:
            rows.append(line("langchain", "/v1/search",
                             asyncio.run(load(peer_url, "/v1/search", queries, clients,
                                              args.seconds, search_body, profile=args.profile))))
            print(rows[-1], flush=True)
    finally:
        peer.terminate()
        peer.wait(timeout=30)
    print("\n".join(["", "summary:", *rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
