"""What tokenising costs: the model's own ``preprocess`` against the Rust tokenizer called
directly, one thread or the tokenizer's own threads.

    TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/bench_tokenize.py --corpus ../shared/data/scifact
    TOKENIZERS_PARALLELISM=true  .venv/bin/python benchmarks/bench_tokenize.py --corpus ../shared/data/scifact

On a GPU a small model's replica is bound by this CPU work (docs/benchmarks/gpu.md). Prints texts/s at batch sizes 32 and 256 and checks that both paths give the same ids.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_embedder import load_texts  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--texts", type=int, default=2048)
    args = ap.parse_args()
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    from ragserve.models import resolve_model

    texts = load_texts(args.texts, args.corpus)
    model = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path,
                                device="cpu")
    rust = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
    rust.enable_truncation(max_length=model.max_seq_length)
    rust.enable_padding()
    print(f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', '(unset)')}, "
          f"{len(texts)} texts, {os.cpu_count()} CPUs")
    for bs in (32, 256):
        t = time.perf_counter()
        for i in range(0, len(texts), bs):
            model.preprocess(texts[i:i + bs])
        a = len(texts) / (time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(0, len(texts), bs):
            encodings = rust.encode_batch(texts[i:i + bs])
            np.array([e.ids for e in encodings], dtype=np.int64)
            np.array([e.attention_mask for e in encodings], dtype=np.int64)
        b = len(texts) / (time.perf_counter() - t)
        print(f"batch {bs:4d}: model.preprocess {a:8.0f} texts/s   tokenizers.encode_batch + numpy "
              f"{b:8.0f} texts/s ({b / a:.2f}x)")
    same = np.array_equal(model.preprocess(texts[:64])["input_ids"].numpy(),
                          np.array([e.ids for e in rust.encode_batch(texts[:64])]))
    print(f"same ids: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
