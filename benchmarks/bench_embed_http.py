"""Embeddings over HTTP: ragserve's ``/v1/embeddings`` against infinity-emb serving the same
model on the same machine, with the same texts and the same clients.

    benchmarks/peers/setup.sh infinity          # once: .venv-infinity (its own pins)
    .venv/bin/python benchmarks/bench_embed_http.py --texts 512 [--corpus ../shared/data/scifact]

Each server runs alone while it is measured (the other is stopped). Clients: C concurrent
HTTP connections, each request carrying K texts; every text is sent once per (C, K) run, so
ragserve's embedding cache is switched off here (it would answer repeats from memory).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_embedder import load_texts  # noqa: E402
from benchmarks.common import RAY_ENV, ROOT, free_port, wait_http  # noqa: E402


async def load(url: str, texts: list[str], concurrency: int, per_request: int,
               model: str | None) -> float:
    batches = [texts[i:i + per_request] for i in range(0, len(texts), per_request)]
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(
            max_connections=concurrency, max_keepalive_connections=concurrency)) as client:
        async def worker():
            while batches:
                body = {"input": batches.pop()}
                if model:
                    body["model"] = model
                r = await client.post(url, json=body)
                r.raise_for_status()

        await client.post(url, json={"input": texts[:4], **({"model": model} if model else {})})
        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(texts) / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--per-request", default="1,16")
    ap.add_argument("--batch-size", type=int, default=32, help="both servers' max batch")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--runtime", choices=["torch", "onnx"], default="torch",
                    help="ragserve's embedder runtime (infinity runs its torch engine)")
    ap.add_argument("--quantize", choices=["none", "int8"], default="none",
                    help="ragserve's embedder quantisation (int8: with --runtime onnx)")
    args = ap.parse_args()
    texts = load_texts(args.texts, args.corpus)
    runs = [(c, k) for k in map(int, args.per_request.split(","))
            for c in map(int, args.concurrency.split(","))]

    from ragserve.models import resolve_model

    model_dir = str(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path)
    results: dict[str, dict] = {}

    # ---- infinity-emb
    venv = ROOT / ".venv-infinity"
    if not (venv / "bin" / "infinity_emb").exists():
        print("infinity-emb missing: run benchmarks/peers/setup.sh infinity")
        return 1
    port = free_port()
    proc = subprocess.Popen(
        [str(venv / "bin" / "infinity_emb"), "v2", "--model-id", model_dir,
         "--served-model-name", "minilm", "--port", str(port), "--host", "127.0.0.1",
         "--batch-size", str(args.batch_size), "--device", "cpu", "--engine", "torch",
         "--no-bettertransformer", "--log-level", "warning"],  # no access log, as for ragserve
        env={**os.environ, "OMP_NUM_THREADS": str(args.threads),
             "INFINITY_ANONYMOUS_USAGE_STATS": "0"},
        stdout=open("/tmp/ragserve-bench-infinity.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
        results["infinity-emb 0.0.78"] = {run: asyncio.run(load(
            f"http://127.0.0.1:{port}/embeddings", texts, *run, "minilm")) for run in runs}
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    # ---- ragserve (the search graph; the embedder is what this measures)
    import ray
    from ray import serve

    from graphs.rag import build_search_app

    port = free_port()
    ray.init(include_dashboard=False, log_to_driver=False,
             runtime_env=RAY_ENV)
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    try:
        import tempfile

        tmp = tempfile.mkdtemp(prefix="ragserve-embed-http-")
        serve.run(build_search_app({
            "embedder": {"config": {"torch_threads": args.threads, "runtime": args.runtime,
                                    "quantize": args.quantize,
                                    "batching": {
                "max_batch_size": args.batch_size, "batch_wait_timeout_s": 0.005}},
                "deployment": {"num_replicas": 1, "max_ongoing_requests": 4 * args.batch_size,
                               "ray_actor_options": {"num_cpus": 1}}},
            "retriever": {"config": {"path": f"{tmp}/qdrant"}},
            "ingress": {"config": {"cache": {"embeddings": {"enabled": False}}},
                        "deployment": {"max_ongoing_requests": 256,
                                       "ray_actor_options": {"num_cpus": 0.25}}},
        }), name="ragserve", route_prefix="/")
        results["ragserve"] = {run: asyncio.run(load(
            f"http://127.0.0.1:{port}/v1/embeddings", texts, *run, None)) for run in runs}
    finally:
        serve.shutdown()
        ray.shutdown()

    print(f"{len(texts)} texts; texts/s over HTTP (C concurrent clients × K texts per request)")
    print(f"{'C':>4s} {'K':>4s} " + " ".join(f"{name:>20s}" for name in results) + "   ratio")
    names = list(results)
    for run in runs:
        a, b = results[names[1]][run], results[names[0]][run]
        print(f"{run[0]:4d} {run[1]:4d} " + " ".join(f"{results[n][run]:20.1f}" for n in names)
              + f"   {a / b:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
