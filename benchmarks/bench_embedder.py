"""Embedder benchmark: the Serve embedder through handles against the same engine in process.

    .venv/bin/python benchmarks/bench_embedder.py --texts 1024 [--corpus ../shared/data/scifact]
    # on a GPU (benchmarks/device/gpu_embedder.sh runs this on the GPU machine):
    python benchmarks/bench_embedder.py --device cuda --dtype float16 --num-gpus 1 ...

The replica's settings come from ``--config`` (default ``configs/local.yaml``, or
``configs/gpu.yaml`` with ``--device cuda``): the embedder's runtime, quantisation, dtype,
threads, workers and batching, each of which an option below overrides.

1. The limit: the same backend the replica runs (``SentenceTransformerEmbedder``: the same
   runtime, quantisation, dtype, workers and threads per worker), in process without Serve,
   encoding all the texts in one call (sorted by length, passes of each ``--batch-sizes`` size
   spread over its worker pool). The best pass size is the limit, so every "x the limit" ratio
   compares the replica with its own engine at its best in-process setting.
2. The Serve embedder (``deployments/embedder.py``; ``--replicas`` of ``--num-cpus`` CPUs and
   ``--num-gpus`` GPUs each) called through a ``DeploymentHandle`` by 1, 8, 32 and 64 concurrent
   callers, each sending ``--texts-per-call`` texts per call (1: as queries arrive; more: as
   ingestion sends chunks), batched (``@serve.batch``) and unbatched (``max_batch_size=1``,
   single-text calls only). ``--driver-procs`` spreads the
   callers over several processes, as several ingress replicas would be: on a GPU one Python
   process cannot make calls as fast as the replica answers them.

Every line names the engine it ran (runtime, precision, device, workers x threads), and a
ratio whose two sides ran different engines is flagged as not like for like (``--limit`` is
taken on trust: give one measured with the same settings). Texts: passages of the BEIR corpus
given with --corpus (title + text, the first N: the same texts in every checkout), or
paragraphs of this project's docs (which change as the docs do). Prints texts/s for each and
the ratio to the limit (and writes them to --json). Loopback only; every run is bounded by the
number of texts.
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

# Options that override a field of the config's embedder (option name -> EmbedderConfig field).
OVERRIDES = {"model": "model", "device": "device", "dtype": "dtype", "runtime": "runtime",
             "quantize": "quantize", "workers": "workers", "threads": "torch_threads",
             "encode_batch_size": "encode_batch_size"}


def embedder_settings(path: Path) -> dict:
    """The ``args.embedder.config`` of the first application in a Serve config that has one."""
    import yaml

    cfg = yaml.safe_load(path.read_text())
    for app in cfg.get("applications") or []:
        embedder = (app.get("args") or {}).get("embedder")
        if embedder is not None:
            return dict(embedder.get("config") or {})
    raise SystemExit(f"{path}: no application with args.embedder")


def engine(health: dict) -> str:
    """What ran the model, from the backend's ``health()``: runtime, precision, device, workers."""
    precision = "int8" if health.get("quantize") == "int8" else health.get("dtype")
    workers, threads = health.get("workers"), health.get("threads_per_worker")
    label = f"{health.get('runtime')} {precision} on {health.get('device')}, {workers} worker(s)"
    return label + (f" x {threads} thread(s)" if threads else "")


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
        for path in sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md"),
                            ROOT / "k8s" / "README.md", ROOT / "BENCHMARKS.md"]):
            texts += [p.strip() for p in path.read_text().split("\n\n") if len(p.split()) >= 8]
        texts = (texts * (n // max(1, len(texts)) + 1))[:n]
    return texts


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


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
    ap.add_argument("--config", default=None,
                    help="Serve config whose embedder is benchmarked (default: configs/local.yaml; "
                    "configs/gpu.yaml with --device cuda); the options below override it")
    ap.add_argument("--model", default=None, help="default: the config's")
    ap.add_argument("--callers", default="1,8,32,64")
    ap.add_argument("--texts-per-call", default="1", help="texts per handle call (comma list)")
    ap.add_argument("--batch-sizes", default="16,32,64,128",
                    help="pass sizes (texts per forward pass) tried in process; the best one "
                    "is the limit")
    ap.add_argument("--modes", default="batched,unbatched")
    ap.add_argument("--serve-batch", type=int, default=None,
                    help="@serve.batch max_batch_size (default: the config's)")
    ap.add_argument("--wait-s", type=float, default=None,
                    help="@serve.batch wait timeout (default: the config's)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads per replica and in process (default: the config's torch_threads; "
                    "unset there: every CPU on CPU, torch's own on CUDA)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                    help="default: the config's")
    ap.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default=None,
                    help="default: the config's (auto: float16 on CUDA, float32 on CPU)")
    ap.add_argument("--runtime", choices=["torch", "onnx"], default=None,
                    help="the embedder's runtime, in the replica and in process (default: the "
                    "config's)")
    ap.add_argument("--quantize", choices=["none", "int8"], default=None,
                    help="the embedder's quantisation, in the replica and in process (int8: with "
                    "--runtime onnx; default: the config's)")
    ap.add_argument("--workers", type=int, default=None,
                    help="concurrent model calls, in the replica and in process (default: the "
                    "config's; unset there: one per thread on CPU, 1 on CUDA)")
    ap.add_argument("--encode-batch-size", type=int, default=None,
                    help="texts per forward pass in the replica (default: the config's; unset: 16 "
                    "CPU, 128 CUDA)")
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--num-cpus", type=float, default=1, help="CPUs per replica")
    ap.add_argument("--num-gpus", type=float, default=0,
                    help="GPUs per replica (0.5: two replicas share one GPU)")
    ap.add_argument("--driver-procs", type=int, default=1, help="processes making the calls")
    ap.add_argument("--limit", type=float, default=None,
                    help="texts/s of the limit from an earlier run with the same engine, "
                    "precision and workers: skips the in-process loop")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    config_path = Path(args.config or ("configs/gpu.yaml" if args.device == "cuda"
                                       else "configs/local.yaml"))
    if not config_path.is_absolute() and not config_path.exists():
        config_path = ROOT / config_path
    settings = embedder_settings(config_path)
    settings.update({field: getattr(args, option) for option, field in OVERRIDES.items()
                     if getattr(args, option) is not None})
    if args.runtime == "torch" and args.quantize is None:
        settings["quantize"] = "none"  # the config's int8 is ONNX-only
    batching = dict(settings.get("batching") or {})
    if args.serve_batch is not None:
        batching["max_batch_size"] = args.serve_batch
    if args.wait_s is not None:
        batching["batch_wait_timeout_s"] = args.wait_s
    settings["batching"] = batching

    from pydantic import ValidationError

    from ragserve.config import EmbedderConfig
    from ragserve.embedding import SentenceTransformerEmbedder

    try:
        config = EmbedderConfig.model_validate(settings)
    except ValidationError as e:
        raise SystemExit(f"{config_path} with these options: {e}") from None
    if config.torch_threads is None and (config.runtime == "onnx" or config.device == "cpu"
                                         or (config.device == "auto" and not _cuda())):
        # Spelled out, so the replica (whose torch follows Ray's num_cpus) and the in-process
        # limit (torch's own count: every CPU) plan the same workers and threads.
        config = config.model_copy(update={"torch_threads": os.cpu_count() or 2})
    texts = load_texts(args.texts, args.corpus)
    print(f"{len(texts)} texts, mean {sum(len(t.split()) for t in texts) / len(texts):.0f} words; "
          f"model {config.model}; config {config_path.name} with the options given: runtime "
          f"{config.runtime}, quantize {config.quantize}, device {config.device}, dtype "
          f"{config.dtype}, threads {config.torch_threads or 'default'}, workers "
          f"{config.workers or 'default'}; @serve.batch {config.batching.max_batch_size} / "
          f"{config.batching.batch_wait_timeout_s} s", flush=True)

    results: dict = {"args": vars(args), "config": config.model_dump(mode="json"), "raw": {},
                     "serve": []}
    # The limit: the replica's own backend (engine, precision, workers, threads) without Serve.
    raw = SentenceTransformerEmbedder(config)
    raw.warm_up()
    info = raw.info()
    raw_engine = engine(raw.health())
    results["device"], results["dtype"] = info.device, info.dtype
    results["raw_engine"] = raw_engine
    limit, best_bs = args.limit or 0.0, None
    if args.limit is None:
        kinds = ["passage"] * len(texts)
        raw.encode(texts[:256], kinds[:256])  # warm (CUDA kernels, allocator, ONNX arena)
        for bs in ints(args.batch_sizes):
            raw.config = config.model_copy(update={"encode_batch_size": bs})
            t = time.perf_counter()
            raw.encode(texts, kinds)
            rate = len(texts) / (time.perf_counter() - t)
            results["raw"][bs] = rate
            print(f"raw, in process [{raw_engine}] pass size {bs:<4d} {rate:9.1f} texts/s",
                  flush=True)
            if rate > limit:
                limit, best_bs = rate, bs
        print(f"limit: {limit:.1f} texts/s [{raw_engine}, pass size {best_bs}]", flush=True)
    else:
        print(f"limit: {limit:.1f} texts/s (--limit: its run must have used {raw_engine})",
              flush=True)
    results["limit"] = {"texts_per_s": limit, "batch_size": best_bs, "engine": raw_engine}
    if raw._pool is not None:
        raw._pool.shutdown()
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
    modes = {"batched": config.batching.max_batch_size, "unbatched": 1}
    try:
        for label in args.modes.split(","):
            batch = modes[label]
            app = serve.deployment(EmbedderDeployment, name="Embedder").options(
                max_ongoing_requests=max(64, 2 * batch), num_replicas=args.replicas,
                ray_actor_options={"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
                user_config={"max_batch_size": batch,
                             "batch_wait_timeout_s": config.batching.batch_wait_timeout_s},
            ).bind(config)
            name = f"bench-{label}"
            handle = serve.run(app, name=name, route_prefix=None)
            serve_engine = engine(handle.health.remote().result())
            results.setdefault("serve_engine", serve_engine)
            like = "" if serve_engine == raw_engine else (
                f"  (NOT like for like: the limit ran {raw_engine})")
            print(f"serve replica [{serve_engine}] x {args.replicas}{like}", flush=True)

            # Unbatched is about single-text calls (a call of 32 texts is 32 model calls there).
            plan = [(callers, per_call)
                    for per_call in (ints(args.texts_per_call) if batch > 1 else [1])
                    for callers in ints(args.callers)]

            def report(callers: int, per_call: int, rate: float) -> None:
                results["serve"].append({
                    "mode": label, "max_batch_size": batch, "texts_per_call": per_call,
                    "callers": callers, "texts_per_s": rate, "x_limit": rate / limit,
                    "engine": serve_engine, "like_for_like": serve_engine == raw_engine})
                mark = "" if serve_engine == raw_engine else " (not like for like)"
                print(f"serve [{serve_engine}] {label:9s} (max_batch_size={batch:<3d}) "
                      f"texts/call={per_call:<3d} callers={callers:<3d} {rate:9.1f} texts/s  = "
                      f"{rate / limit:.2f}x the limit{mark}", flush=True)

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
