"""How to give a passage longer than the embedder's input one vector: dense retrieval only.

Pools compared over the same window vectors (windows cut by ``ragserve.embedding.windows``,
the embedder's own code: 254 word pieces, 32 shared):

- ``truncate``: the first window (what the model does by itself);
- ``mean``: the plain mean of the windows' vectors;
- ``weighted``: the mean weighted by the pieces each window holds (``long_passages: mean``);
- ``first+mean``: the first window's vector plus the plain mean, one vector;
- ``max``: the best window's score (a multi-vector field; not a single vector).

On a BEIR folder's split (nDCG@10 by ``ragserve.eval.beir.evaluate_run``) and on the docs QA
set (rank of a chunk holding each answerable question's evidence among the chunks ``make
serve`` ingests). float32 sentence-transformers, vectors cached under ``--cache``::

    .venv/bin/python benchmarks/bench_long_passages.py --beir ../shared/data/scifact --split train
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

POOLS = ("truncate", "mean", "weighted", "first+mean", "max")


def _embed(model, texts: list[str], path: Path) -> np.ndarray:
    if path.exists():
        return np.load(path)
    t = time.perf_counter()
    v = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                     show_progress_bar=False)
    np.save(path, v)
    print(f"  embedded {len(texts)} texts in {time.perf_counter() - t:.0f} s", flush=True)
    return v


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def scores(model, splitter, queries: list[str], docs: list[str], cache: Path, tag: str) -> dict:
    """Query × document score matrices, one per pool."""
    from ragserve.embedding.windows import pool_windows

    windows = splitter.expand(docs, [True] * len(docs))
    print(f"  {tag}: {len(windows.texts)} windows for {len(docs)} texts "
          f"({len(windows.texts) / len(docs):.2f} each)")
    vecs = _embed(model, windows.texts, cache / f"{tag}-windows.npy")
    qv = _embed(model, queries, cache / f"{tag}-queries.npy")
    owner = np.asarray(windows.owner)
    first = np.searchsorted(owner, np.arange(len(docs)))  # owners ascend: each doc's first row
    plain = pool_windows(vecs, type(windows)(windows.texts, windows.owner, len(docs)), True)
    out = {"truncate": qv @ vecs[first].T, "mean": qv @ plain.T,
           "weighted": qv @ pool_windows(vecs, windows, True).T,
           "first+mean": qv @ _unit(vecs[first] + plain).T}
    best = np.full((len(queries), len(docs)), -np.inf, dtype=np.float32)
    np.maximum.at(best.T, owner, (qv @ vecs.T).T)
    out["max"] = best
    return out


def beir(model, splitter, folder: Path, split: str, cache: Path) -> None:
    from ragserve.eval.beir import evaluate_run, load_beir
    from ragserve.eval.runner import _documents

    ds = load_beir(folder, split)
    docs = _documents(ds)  # the harness's own document text (title + abstract)
    ids = [d["metadata"]["beir_id"] for d in docs]
    qids = list(ds.queries)
    lengths = np.array([splitter.count(d["text"]) for d in docs])
    print(f"{ds.name}: {len(docs)} documents, word pieces p50 {np.median(lengths):.0f}, "
          f"longer than a window: {(lengths > splitter.size).mean():.1%}")
    for pool, s in scores(model, splitter, [ds.queries[q] for q in qids],
                          [d["text"] for d in docs], cache, f"{ds.name}-{split}").items():
        run = {}
        for i, q in enumerate(qids):
            top = np.argsort(-s[i])[:100]
            run[q] = {ids[j]: float(s[i, j]) for j in top}
        m = evaluate_run(ds.qrels, run)
        print(f"  {split} dense {pool:11s} nDCG@10 {m['ndcg@10']:.4f}  R@10 {m['recall@10']:.4f}"
              f"  MRR@10 {m['mrr@10']:.4f}", flush=True)


def docs_qa(model, splitter, cache: Path) -> None:
    from benchmarks.bench_answers import load_questions, normalise, served_paths
    from ragserve.ingest.chunking import TokenChunker, chunk_document
    from ragserve.ingest.loaders import load_documents

    chunker = TokenChunker()
    chunks = [c for d in load_documents([ROOT / p for p in served_paths()], root=ROOT)
              for c in chunk_document(d, chunker)]
    rows = [r for r in load_questions() if r.get("source")]
    holders = [[i for i, c in enumerate(chunks) if normalise(r["evidence"]) in normalise(c.text)]
               for r in rows]
    print(f"docs QA: {len(rows)} answerable questions over {len(chunks)} chunks")
    for pool, s in scores(model, splitter, [r["question"] for r in rows],
                          [c.text for c in chunks], cache, "docs").items():
        ranks = np.array([min(list(np.argsort(-s[i])).index(j) for j in h) + 1
                          for i, h in enumerate(holders)])
        print(f"  docs dense {pool:11s} evidence chunk in top 1 {np.mean(ranks <= 1):.3f}  "
              f"top 5 {np.mean(ranks <= 5):.3f}  top 10 {np.mean(ranks <= 10):.3f}  "
              f"MRR {np.mean(1 / ranks):.3f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--beir", type=Path, default=None, help="a BEIR folder (e.g. SciFact)")
    p.add_argument("--split", default="train")
    p.add_argument("--no-docs", action="store_true", help="skip the docs QA set")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--cache", type=Path, default=Path("/tmp/bench_long_passages"))
    args = p.parse_args(argv)
    from sentence_transformers import SentenceTransformer

    from ragserve.embedding.windows import WindowSplitter
    from ragserve.models import resolve_model

    resolved = resolve_model(args.model)
    model = SentenceTransformer(resolved.path, device="cpu",
                                local_files_only=resolved.source != "hub")
    size = model.max_seq_length - model.tokenizer.num_special_tokens_to_add(pair=False)
    splitter = WindowSplitter(model.tokenizer, size, args.overlap)
    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"{args.model}: windows of {size} word pieces, {args.overlap} shared")
    if args.beir is not None:
        beir(model, splitter, args.beir, args.split, args.cache)
    if not args.no_docs:
        docs_qa(model, splitter, args.cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
