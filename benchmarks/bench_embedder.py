"""Embedder benchmark: the Serve embedder through handles against the hardware's limit.

    .venv/bin/python benchmarks/bench_embedder.py --texts 1024 [--corpus ../shared/data/scifact]

1. The limit: raw in-process ``SentenceTransformer.encode`` over the same texts at several
   batch sizes (the best one is the limit on this machine).
2. The Serve embedder (``deployments/embedder.py``, one replica with every CPU) called through
   a ``DeploymentHandle`` by 1, 8, 32 and 64 concurrent callers, each sending one text per
   call (as queries arrive), batched (``@serve.batch``) and unbatched (``max_batch_size=1``).

Texts: passages of the BEIR corpus given with --corpus (title + text, first N), or paragraphs of
this project's docs. Prints texts/s for each and the ratio to the limit. Loopback only; every
run is bounded by the number of texts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    else:
        for path in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
                            ROOT / "k8s" / "README.md", ROOT / "BENCHMARKS.md"]):
            texts += [p.strip() for p in path.read_text().split("\n\n") if len(p.split()) >= 8]
        texts = (texts * (n // max(1, len(texts)) + 1))[:n]
    return texts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=1024)
    ap.add_argument("--corpus", default=None, help="a BEIR folder (corpus.jsonl)")
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--callers", default="1,8,32,64")
    ap.add_argument("--batch-sizes", default="16,32,64,128", help="raw encode batch sizes")
    ap.add_argument("--serve-batch", type=int, default=64, help="@serve.batch max_batch_size")
    ap.add_argument("--wait-s", type=float, default=0.01, help="@serve.batch wait timeout")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--runtime", choices=["torch", "onnx"], default="torch",
                    help="the Serve embedder's runtime (the limit stays raw torch encode)")
    ap.add_argument("--workers", type=int, default=None,
                    help="concurrent model calls in the Serve replica (default: one per thread on CPU)")
    args = ap.parse_args()
    texts = load_texts(args.texts, args.corpus)
    print(f"{len(texts)} texts, mean {sum(len(t.split()) for t in texts) / len(texts):.0f} words; "
          f"model {args.model}; {args.threads} torch threads; device {args.device}")

    from ragserve.config import EmbedderConfig
    from ragserve.embedding import SentenceTransformerEmbedder

    config = EmbedderConfig(model=args.model, torch_threads=args.threads, device=args.device,
                            workers=args.workers, runtime=args.runtime)
    raw = SentenceTransformerEmbedder(config.model_copy(update={"workers": 1, "runtime": "torch"}))
    raw.warm_up()
    model = raw.model
    model.encode(texts[:64], batch_size=32)  # warm
    limit, best_bs = 0.0, None
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        t = time.perf_counter()
        model.encode(texts, batch_size=bs, normalize_embeddings=True)
        rate = len(texts) / (time.perf_counter() - t)
        print(f"raw SentenceTransformer.encode batch_size={bs:<4d} {rate:8.1f} texts/s")
        if rate > limit:
            limit, best_bs = rate, bs
    print(f"limit: {limit:.1f} texts/s (batch_size={best_bs})")
    del raw, model
    if args.runtime == "onnx":  # the same loop on ONNX Runtime, for reference
        raw = SentenceTransformerEmbedder(config.model_copy(update={"workers": 1}))
        raw.warm_up()
        for bs in [int(b) for b in args.batch_sizes.split(",")]:
            t = time.perf_counter()
            for i in range(0, len(texts), bs):
                raw._encode_pass(texts[i:i + bs])
            rate = len(texts) / (time.perf_counter() - t)
            print(f"raw ONNX Runtime, same model     batch_size={bs:<4d} {rate:8.1f} texts/s")
        del raw

    import ray
    from ray import serve

    from deployments.embedder import EmbedderDeployment

    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=os.cpu_count(),
             runtime_env=RAY_ENV)
    try:
        for label, batch in (("batched", args.serve_batch), ("unbatched", 1)):
            app = serve.deployment(EmbedderDeployment, name="Embedder").options(
                max_ongoing_requests=max(64, 2 * batch), num_replicas=1,
                ray_actor_options={"num_cpus": 1},
                user_config={"max_batch_size": batch, "batch_wait_timeout_s": args.wait_s},
            ).bind(config)
            handle = serve.run(app, name=f"bench-{label}", route_prefix=None)

            async def drive(callers: int) -> float:
                queue = list(texts)

                async def caller():
                    while queue:
                        text = queue.pop()
                        await handle.embed.remote([text], "passage")

                t = time.perf_counter()
                await asyncio.gather(*(caller() for _ in range(callers)))
                return len(texts) / (time.perf_counter() - t)

            async def sweep() -> None:
                await handle.embed.remote(texts[:8], "passage")  # warm
                for callers in [int(c) for c in args.callers.split(",")]:
                    rate = await drive(callers)
                    print(f"serve {label:9s} (max_batch_size={batch:<3d}) callers={callers:<3d} "
                          f"{rate:8.1f} texts/s  = {rate / limit:.2f}x the limit", flush=True)

            asyncio.run(sweep())
            serve.delete(f"bench-{label}")
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
