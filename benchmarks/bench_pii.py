"""PII detection quality and cost: precision and recall per entity type on the labelled set
(tests/data/pii_labelled.jsonl, built by tests/data/make_pii_labelled.py), and the cost of
filtering per KB / throughput per MB, on PII-dense text (the labelled set) and on prose
(tests/corpus.py's documents).

A detection is a true positive when its type matches a label's and their spans overlap; every
other detection is a false positive (hard negatives in the set: cards failing Luhn, IBANs
with a bad checksum, SSNs in invalid ranges, version strings, order numbers, dates).

    .venv/bin/python benchmarks/bench_pii.py [--min-score 0.4] [--mb 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragserve.security.pii import PII_ENTITIES, PiiFilter, PiiPolicy  # noqa: E402

DATA = ROOT / "tests" / "data" / "pii_labelled.jsonl"


def quality(pii: PiiFilter, rows: list[dict], min_score: float) -> dict[str, dict]:
    tp, fp, fn = Counter(), Counter(), Counter()
    for row in rows:
        found = pii.detect(row["text"], PII_ENTITIES, min_score)
        labels = row["entities"]
        matched = set()
        for d in found:
            hit = next((i for i, lab in enumerate(labels) if i not in matched
                        and lab["type"] == d.entity_type
                        and d.start < lab["end"] and lab["start"] < d.end), None)
            if hit is None:
                fp[d.entity_type] += 1
            else:
                matched.add(hit)
                tp[d.entity_type] += 1
        for i, lab in enumerate(labels):
            if i not in matched:
                fn[lab["type"]] += 1
    out = {}
    for e in PII_ENTITIES:
        p = tp[e] / (tp[e] + fp[e]) if tp[e] + fp[e] else 1.0
        r = tp[e] / (tp[e] + fn[e]) if tp[e] + fn[e] else 1.0
        out[e] = {"tp": tp[e], "fp": fp[e], "fn": fn[e], "precision": round(p, 3),
                  "recall": round(r, 3)}
    return out


def cost(pii: PiiFilter, docs: list[str], policy: PiiPolicy, mb: float) -> dict:
    size = sum(len(d.encode()) for d in docs)
    reps = max(1, int(mb * 1e6 / size))
    pii.apply(docs[0], policy)  # warm
    t0 = time.perf_counter()
    for _ in range(reps):
        for d in docs:
            pii.apply(d, policy)
    dt = time.perf_counter() - t0
    kb = reps * size / 1000
    return {"kb": round(kb, 1), "ms_per_kb": round(dt * 1000 / kb, 3),
            "mb_per_s": round(kb / 1000 / dt, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--min-score", type=float, default=0.4)
    ap.add_argument("--mb", type=float, default=1.0, help="text filtered per cost figure")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    t0 = time.perf_counter()
    pii = PiiFilter(hash_key="bench-key-0123456789")
    build_s = time.perf_counter() - t0
    q = quality(pii, rows, args.min_score)
    redact = PiiPolicy(default="redact", min_score=args.min_score)
    # ~2 KB documents of PII-dense text (every sentence has one entity or a hard negative).
    dense, cur = [], ""
    for row in rows:
        cur += row["text"] + " "
        if len(cur) > 2000:
            dense.append(cur)
            cur = ""
    from tests.corpus import DOCUMENTS  # prose with no PII
    prose = [d["text"] if isinstance(d, dict) else getattr(d, "text", str(d)) for d in DOCUMENTS]
    result = {"min_score": args.min_score, "labelled_rows": len(rows), "quality": q,
              "cost_pii_dense": cost(pii, dense, redact, args.mb),
              "cost_prose": cost(pii, prose, redact, args.mb),
              "build_s": round(build_s, 2), "loadavg": [round(x, 2) for x in os.getloadavg()]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"labelled set: {len(rows)} texts, min_score {args.min_score}")
    print(f"{'entity':14} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>9} {'recall':>7}")
    for e, m in q.items():
        print(f"{e:14} {m['tp']:4d} {m['fp']:4d} {m['fn']:4d} {m['precision']:9.3f} "
              f"{m['recall']:7.3f}")
    for name in ("cost_pii_dense", "cost_prose"):
        c = result[name]
        print(f"{name}: {c['ms_per_kb']} ms/KB, {c['mb_per_s']} MB/s over {c['kb']} KB "
              "(redact, all six types, one thread)")
    print(f"filter built in {result['build_s']} s (Presidio + spaCy import); "
          f"loadavg {result['loadavg']}")


if __name__ == "__main__":
    main()
