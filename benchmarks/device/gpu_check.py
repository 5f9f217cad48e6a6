"""Raw GPU figures for the embedder model: fp32 against fp16, and what tokenising alone costs.

    python benchmarks/device/gpu_check.py --model FOLDER --corpus BEIR_FOLDER [--texts 4096]

Prints, over the same texts: texts/s of ``SentenceTransformer.encode`` in float32 and float16 at
several batch sizes; texts/s of the tokenizer alone (the CPU part of every pass, which bounds
the GPU rate of a small model); and how far the float16 vectors are from the float32 ones
(cosine). Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.bench_embedder import ints, load_texts  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--texts", type=int, default=4096)
    ap.add_argument("--batch-sizes", default="64,128,256,512,1024")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    texts = load_texts(args.texts, args.corpus)
    print(f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}; {len(texts)} texts", flush=True)
    out: dict = {"gpu": torch.cuda.get_device_name(0), "encode": {}, "tokenize": {}}
    vectors = {}
    for dtype in ("float32", "float16"):
        model = SentenceTransformer(args.model, device="cuda",
                                    model_kwargs={"dtype": getattr(torch, dtype)})
        model.encode(texts[:512], batch_size=128)  # warm
        for bs in ints(args.batch_sizes):
            torch.cuda.synchronize()
            t = time.perf_counter()
            vecs = model.encode(texts, batch_size=bs, normalize_embeddings=True)
            torch.cuda.synchronize()
            rate = len(texts) / (time.perf_counter() - t)
            out["encode"][f"{dtype}/{bs}"] = rate
            print(f"encode {dtype:8s} batch_size={bs:<5d} {rate:9.1f} texts/s", flush=True)
        vectors[dtype] = np.asarray(vecs, dtype=np.float64)
        if dtype == "float16":
            for bs in ints(args.batch_sizes):
                t = time.perf_counter()
                for i in range(0, len(texts), bs):
                    model.tokenize(texts[i:i + bs])
                rate = len(texts) / (time.perf_counter() - t)
                out["tokenize"][bs] = rate
                print(f"tokenize only     batch_size={bs:<5d} {rate:9.1f} texts/s", flush=True)
            out["max_memory_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        del model
        torch.cuda.empty_cache()
    cos = (vectors["float32"] * vectors["float16"]).sum(1)
    out["fp16_vs_fp32_cos"] = {"mean": float(cos.mean()), "min": float(cos.min())}
    print(f"float16 vs float32 vectors: cosine mean {cos.mean():.6f}, min {cos.min():.6f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
