"""BEIR-format datasets and standard IR metrics (pytrec_eval, the trec_eval bindings).

A BEIR folder holds ``corpus.jsonl`` ({_id, title, text}), ``queries.jsonl`` ({_id, text}) and
``qrels/<split>.tsv`` (query-id, corpus-id, score; a header line; graded relevance allowed).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pytrec_eval

__all__ = ["BeirDataset", "load_beir", "evaluate_run", "METRICS"]

# reported name -> (pytrec_eval measure spec, result key, depth the run is cut to first)
METRICS: dict[str, tuple[str, str, int | None]] = {
    "ndcg@10": ("ndcg_cut.10", "ndcg_cut_10", None),
    "recall@10": ("recall.10", "recall_10", None),
    "recall@100": ("recall.100", "recall_100", None),
    "mrr@10": ("recip_rank", "recip_rank", 10),  # MRR@10: reciprocal rank within the top 10
}


@dataclass
class BeirDataset:
    name: str
    corpus: dict[str, dict]  # doc id -> {"title", "text"}
    queries: dict[str, str]  # query id -> text (only queries that have judgements)
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> relevance grade


def load_beir(path: str | Path, split: str = "test", *, max_queries: int | None = None) -> BeirDataset:
    root = Path(path)
    for needed in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (root / needed).exists():
            raise FileNotFoundError(f"{root / needed} is missing: not a BEIR folder for split {split!r}")
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels" / f"{split}.tsv", newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t")
        next(rows, None)  # header
        for row in rows:
            if len(row) < 3:
                continue
            qid, did, grade = row[0].strip(), row[1].strip(), int(float(row[2]))
            qrels.setdefault(qid, {})[did] = grade
    queries: dict[str, str] = {}
    with open(root / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                if str(q["_id"]) in qrels:
                    queries[str(q["_id"])] = q["text"]
    if max_queries is not None:
        keep = sorted(queries)[:max_queries]
        queries = {k: queries[k] for k in keep}
        qrels = {k: qrels[k] for k in keep}
    else:
        qrels = {k: v for k, v in qrels.items() if k in queries}
    corpus: dict[str, dict] = {}
    with open(root / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                corpus[str(d["_id"])] = {"title": d.get("title") or "", "text": d.get("text") or ""}
    return BeirDataset(root.name, corpus, queries, qrels)


def evaluate_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the judged queries (a query with no results scores 0)."""
    out: dict[str, float] = {}
    full = {q: run.get(q, {}) for q in qrels}
    for name, (spec, key, cut) in METRICS.items():
        scored = full
        if cut is not None:
            scored = {q: dict(sorted(r.items(), key=lambda kv: -kv[1])[:cut]) for q, r in full.items()}
        per_query = pytrec_eval.RelevanceEvaluator(qrels, {spec}).evaluate(scored)
        values = [per_query.get(q, {}).get(key, 0.0) for q in qrels]
        out[name] = sum(values) / len(values) if values else 0.0
    return out
