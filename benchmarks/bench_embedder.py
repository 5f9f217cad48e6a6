"""Embedder benchmark: the Serve embedder through handles against the hardware's limit.

    .venv/bin/python benchmarks/bench_embedder.py --texts 1024 [--corpus ../shared/data/scifact]
    # on a GPU (benchmarks/device/gpu_embedder.sh runs this on the lent machine):
    python benchmarks/bench_embedder.py --device cuda --dtype float16 --num-gpus 1 ...

1. The limit: raw in-process ``SentenceTransformer.encode`` over the same texts at several
   batch sizes, in the dtype the replica uses (the best one is the limit on this machine).
2. The Serve embedder (``deployments/embedder.py``; ``--replicas`` of ``--num-cpus`` CPUs and
   ``--num-gpus`` GPUs each) called through a ``DeploymentHandle`` by 1, 8, 32 and 64 concurrent
   callers, each sending ``--texts-per-call`` texts per call (1: as queries arrive; more: as
   ingestion sends chunks), batched (``@serve.batch``) and unbatched (``max_batch_size=1``,
   single-text calls only). ``--driver-procs`` spreads the
   callers over several processes, as several ingress replicas would be: on a GPU one Python
   process cannot make calls as fast as the replica answers them.

Texts: passages of the BEIR corpus given with --corpus (title + text, first N), or paragraphs of
this project's docs. Prints texts/s for each and the ratio to the limit (and writes them to
--json). Loopback only; every run is bounded by the number of texts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import RAY_ENV, ROOT  # noqa: E402


def load_texts(n: int, corpus: str | None) -> list[str]:
    texts: list[str] = []
    if corpus:
        with open(Path(corpus) / "corpus.jsonl", encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                texts.append(f"{doc.get('title', '')}. {doc['text']}".strip())
                if len(texts) >= n:
                    break
        texts = (texts * (n // max(1, len(texts)) + 1))[:n]
    else:
        for path in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
                            ROOT / "k8s" / "README.md", ROOT / "BENCHMARKS.md"]):
            texts += [p.strip() for p in path.read_text().split("\n\n") if len(p.split()) >= 8]
        texts = (texts * (n // max(1, len(texts)) + 1))[:n]
    return texts


def ints(csv: str) -> list[int]:
    return [int(x) for x in csv.split(",") if x.strip()]


async def drive(handle, texts: list[str], callers: int, per_call: int) -> tuple[float, float]:
    """Send ``texts`` in calls of ``per_call`` from ``callers`` coroutines; (start, end) times."""
    calls = [texts[i:i + per_call] for i in range(0, len(texts), per_call)]

    async def caller():
        while calls:
            await handle.embed.remote(calls.pop(), "passage")

    start = time.time()
    await asyncio.gather(*(caller() for _ in range(max(1, callers))))
    return start, time.time()


def _driver_proc(address: str, app: str, texts: list[str], plan: list[tuple[int, int]],
                 barrier, results) -> None:
    """One caller process: connects to the running Ray, then for each (callers, texts per call)
    of ``plan`` waits for the other processes and drives its share of the texts."""
    import ray
    from ray import serve

    ray.init(address=address, log_to_driver=False)
    handle = serve.get_deployment_handle("Embedder", app_name=app)

    async def run():
        await handle.embed.remote(texts[:2], "passage")  # warm this process's router
        for callers, per_call in plan:
            barrier.wait()
            results.put(await drive(handle, texts, callers, per_call))

    asyncio.run(run())
    ray.shutdown()


def drive_procs(address: str, app: str, texts: list[str], plan: list[tuple[int, int]],
                procs: int, on_rate) -> None:
    """``on_rate(callers, texts per call, texts/s)`` for each of ``plan``, as each finishes, the
    callers spread over ``procs`` processes (from the first one's start to the last one's end)."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    shares = [texts[i::procs] for i in range(procs)]
    split = [(max(1, callers // procs), per_call) for callers, per_call in plan]
    workers = [ctx.Process(target=_driver_proc, daemon=True,
                           args=(address, app, share, split, barrier, results)) for share in shares]
    for w in workers:
        w.start()
    for callers, per_call in plan:
        spans = [results.get(timeout=600) for _ in workers]
        on_rate(callers, per_call, len(texts) / (max(e for _, e in spans) - min(s for s, _ in spans)))
    for w in workers:
        w.join(timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=1024)
    ap.add_argument("--corpus", default=None, help="a BEIR folder (corpus.jsonl)")
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--callers", default="1,8,32,64")
    ap.add_argument("--texts-per-call", default="1", help="texts per handle call (comma list)")
    ap.add_argument("--batch-sizes", default="16,32,64,128", help="raw encode batch sizes")
    ap.add_argument("--modes", default="batched,unbatched")
    ap.add_argument("--serve-batch", type=int, default=64, help="@serve.batch max_batch_size")
    ap.add_argument("--wait-s", type=float, default=0.01, help="@serve.batch wait timeout")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per replica (default: every CPU on CPU, torch's own on CUDA)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="auto: float16 on CUDA, float32 on CPU")
    ap.add_argument("--runtime", choices=["torch", "onnx"], default="torch",
                    help="the Serve embedder's runtime (the limit stays raw torch encode)")
    ap.add_argument("--quantize", choices=["none", "int8"], default="none",
                    help="the Serve embedder's quantisation (int8: with --runtime onnx)")
    ap.add_argument("--workers", type=int, default=None,
                    help="concurrent model calls in the Serve replica (default: one per thread on CPU)")
    ap.add_argument("--encode-batch-size", type=int, default=None,
                    help="texts per forward pass in the replica (default: 16 CPU, 128 CUDA)")
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--num-cpus", type=float, default=1, help="CPUs per replica")
    ap.add_argument("--num-gpus", type=float, default=0,
                    help="GPUs per replica (0.5: two replicas share one GPU)")
    ap.add_argument("--driver-procs", type=int, default=1, help="processes making the calls")
    ap.add_argument("--limit", type=float, default=None,
                    help="texts/s of the limit from an earlier run: skips the raw loop")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    texts = load_texts(args.texts, args.corpus)
    threads = args.threads or (None if args.device == "cuda" else os.cpu_count() or 2)
    print(f"{len(texts)} texts, mean {sum(len(t.split()) for t in texts) / len(texts):.0f} words; "
          f"model {args.model}; torch threads {threads or 'default'}; device {args.device}",
          flush=True)

    from ragserve.config import EmbedderConfig
    from ragserve.embedding import SentenceTransformerEmbedder

    config = EmbedderConfig(model=args.model, torch_threads=threads, device=args.device,
                            dtype=args.dtype, workers=args.workers, runtime=args.runtime,
                            quantize=args.quantize,
                            encode_batch_size=args.encode_batch_size)
    results: dict = {"args": vars(args), "raw": {}, "serve": []}
    raw = SentenceTransformerEmbedder(config.model_copy(
        update={"workers": 1, "runtime": "torch", "quantize": "none"}))
    raw.warm_up()
    info = raw.info()
    results["device"], results["dtype"] = info.device, info.dtype
    model = raw.model
    limit, best_bs = args.limit or 0.0, None
    if args.limit is None:
        model.encode(texts[:256], batch_size=64)  # warm (CUDA kernels, allocator)
        for bs in ints(args.batch_sizes):
            t = time.perf_counter()
            model.encode(texts, batch_size=bs, normalize_embeddings=True)
            rate = len(texts) / (time.perf_counter() - t)
            results["raw"][bs] = rate
            print(f"raw SentenceTransformer.encode {info.device}/{info.dtype} batch_size={bs:<4d} "
                  f"{rate:9.1f} texts/s", flush=True)
            if rate > limit:
                limit, best_bs = rate, bs
    print(f"limit: {limit:.1f} texts/s (batch_size={best_bs or 'given'})", flush=True)
    results["limit"] = {"texts_per_s": limit, "batch_size": best_bs}
    del raw, model
    if args.runtime == "onnx":  # the same loop on ONNX Runtime, for reference
        raw = SentenceTransformerEmbedder(config.model_copy(update={"workers": 1}))
        raw.warm_up()
        for bs in ints(args.batch_sizes):
            t = time.perf_counter()
            for i in range(0, len(texts), bs):
                raw._encode_pass(texts[i:i + bs])
            rate = len(texts) / (time.perf_counter() - t)
            print(f"raw ONNX Runtime, same model     batch_size={bs:<4d} {rate:8.1f} texts/s")
        del raw
    if info.device == "cuda":
        import torch

        torch.cuda.empty_cache()  # the replicas need the memory the raw loop kept cached

    import ray
    from ray import serve

    from deployments.embedder import EmbedderDeployment

    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=os.cpu_count(),
             runtime_env=RAY_ENV)
    address = ray.get_runtime_context().gcs_address
    modes = {"batched": args.serve_batch, "unbatched": 1}
    try:
        for label in args.modes.split(","):
            batch = modes[label]
            app = serve.deployment(EmbedderDeployment, name="Embedder").options(
                max_ongoing_requests=max(64, 2 * batch), num_replicas=args.replicas,
                ray_actor_options={"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
                user_config={"max_batch_size": batch, "batch_wait_timeout_s": args.wait_s},
            ).bind(config)
            name = f"bench-{label}"
            handle = serve.run(app, name=name, route_prefix=None)

            # Unbatched is about single-text calls (a call of 32 texts is 32 model calls there).
            plan = [(callers, per_call)
                    for per_call in (ints(args.texts_per_call) if batch > 1 else [1])
                    for callers in ints(args.callers)]

            def report(callers: int, per_call: int, rate: float) -> None:
                results["serve"].append({
                    "mode": label, "max_batch_size": batch, "texts_per_call": per_call,
                    "callers": callers, "texts_per_s": rate, "x_limit": rate / limit})
                print(f"serve {label:9s} (max_batch_size={batch:<3d}) texts/call={per_call:<3d} "
                      f"callers={callers:<3d} {rate:9.1f} texts/s  = {rate / limit:.2f}x the limit",
                      flush=True)

            async def sweep() -> None:
                await asyncio.gather(*(handle.embed.remote(texts[:8], "passage")
                                       for _ in range(4 * args.replicas)))  # warm
                if args.driver_procs > 1:
                    await asyncio.to_thread(drive_procs, address, name, texts, plan,
                                            args.driver_procs, report)
                    return
                for callers, per_call in plan:
                    start, end = await drive(handle, texts, callers, per_call)
                    report(callers, per_call, len(texts) / (end - start))

            asyncio.run(sweep())
            serve.delete(name)
    finally:
        serve.shutdown()
        ray.shutdown()
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
