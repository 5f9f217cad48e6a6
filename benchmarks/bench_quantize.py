"""int8 against float32 for the embedder's ONNX graph: time per text and how far vectors move.

    .venv/bin/python benchmarks/bench_quantize.py --corpus ../shared/data/scifact

Exports the bundled MiniLM's transformer as ``OnnxTransformer`` does, quantises it the ways
ONNX Runtime's dynamic quantisation offers (int8 per channel — what ``quantize: int8`` uses —,
int8 per tensor, uint8 per channel with reduced range), and prints for each, on one thread:
ms per single query, ms per passage in batches of 16 and one at a time (how an int8 replica
runs them: one run per text keeps a vector independent of the texts beside it), and the cosine of its vectors to the
float32 ones (mean, min) over SciFact queries and passages. Quality on retrieval is
``ragserve eval --runtime onnx --quantize int8`` (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_embedder import load_texts  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True, help="a BEIR folder (corpus.jsonl, queries.jsonl)")
    ap.add_argument("--n", type=int, default=256, help="queries and passages compared")
    args = ap.parse_args()
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer

    from ragserve.embedding.onnx_runtime import OPSET, _encoder
    from ragserve.models import resolve_model

    torch.set_num_threads(1)
    model = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path,
                                device="cpu")
    passages = load_texts(args.n, args.corpus)
    with open(Path(args.corpus) / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in f][: args.n]
    folder = Path(tempfile.mkdtemp(prefix="ragserve-quant-"))
    sample = model.preprocess(["an example sentence", "two"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_encoder(model[0].auto_model),
                          (sample["input_ids"], sample["attention_mask"]), str(folder / "f32.onnx"),
                          input_names=["input_ids", "attention_mask"], output_names=["tokens"],
                          dynamic_axes={n: {0: "b", 1: "t"} for n in ("input_ids", "attention_mask", "tokens")},
                          opset_version=OPSET, dynamo=False)
    variants = {"float32": folder / "f32.onnx"}
    for name, kwargs in {
        "int8 per channel (quantize: int8)": dict(weight_type=QuantType.QInt8, per_channel=True),
        "int8 per tensor": dict(weight_type=QuantType.QInt8, per_channel=False),
        "uint8 per channel, reduced range": dict(weight_type=QuantType.QUInt8, per_channel=True,
                                                 reduce_range=True),
    }.items():
        out = folder / f"{len(variants)}.onnx"
        quantize_dynamic(str(folder / "f32.onnx"), str(out), **kwargs)
        variants[name] = out

    def session(path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def encode(sess, texts):
        features = model.preprocess(texts)
        mask = features["attention_mask"].numpy()
        (tokens,) = sess.run(None, {"input_ids": features["input_ids"].numpy(),
                                    "attention_mask": mask})
        vectors = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    reference = None
    print(f"{'graph':36s} {'ms/query':>9s} {'ms/passage':>11s} {'alone':>7s}  cosine to "
          "float32: queries (mean, min), passages (mean, min)")
    for name, path in variants.items():
        sess = session(path)
        encode(sess, queries[:4])  # warm
        t = time.perf_counter()
        for q in queries[:128]:
            encode(sess, [q])
        per_query = (time.perf_counter() - t) / 128 * 1000
        t = time.perf_counter()
        for i in range(0, 64, 16):
            encode(sess, passages[i:i + 16])
        per_passage = (time.perf_counter() - t) / 64 * 1000
        t = time.perf_counter()
        for p in passages[:64]:
            encode(sess, [p])
        per_passage_alone = (time.perf_counter() - t) / 64 * 1000
        vq = encode(sess, queries)
        vp = np.concatenate([encode(sess, passages[i:i + 32]) for i in range(0, len(passages), 32)])
        reference = reference or (vq, vp)
        cq, cp = (vq * reference[0]).sum(1), (vp * reference[1]).sum(1)
        print(f"{name:36s} {per_query:9.1f} {per_passage:11.1f} {per_passage_alone:7.1f}  {cq.mean():.4f} {cq.min():.4f}  "
              f"{cp.mean():.4f} {cp.min():.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
