"""``ragserve eval DATASET``: retrieval quality on a BEIR-format folder.

In process by default (the service's own stage code, ``ragserve.eval.runner``), or against the
running service with ``--service``. Prints nDCG@10, recall@10/100, MRR@10 and queries/s per
mode; ``--json`` also writes them to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
from pathlib import Path
from typing import Any

from ragserve.cli.options import EXIT_ERROR, EXIT_OK, Context, positive_int
from ragserve.cli.output import eprint
from ragserve.cli.progress import Progress

__all__ = ["register", "run"]


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "eval", parents=parents,
        help="retrieval quality on a BEIR-format dataset (nDCG@10, recall, MRR@10)",
    )
    parser.add_argument("dataset", type=Path,
                        help="folder with corpus.jsonl, queries.jsonl, qrels/")
    parser.add_argument("--split", default="test", help="qrels split to evaluate (default test)")
    parser.add_argument("--modes", default="dense,sparse,hybrid,dense+rerank,hybrid+rerank",
                        help="in-process rankings, comma-separated: dense|sparse|hybrid[+rerank]")
    parser.add_argument("--fusion-weights", default=None,
                        help="compare the lexical_fusion fallback at these weights, e.g. "
                        "0.3,0.5,0.7 (tune on train)")
    parser.add_argument("--reranker-fallback", choices=["best_part", "lexical_fusion", "retrieval"],
                        default=None,
                        help="the scorer +rerank modes use when no cross-encoder loads "
                             "(default: RerankerConfig's)")
    parser.add_argument("--fusions", default=None,
                        help="hybrid fusions to compare on one index, e.g. rrf,dbsf")
    parser.add_argument("--prefetch-min", type=positive_int, default=None,
                        help="hybrid: candidates each side fuses at least (in-process; "
                        "default: the retriever config's)")
    parser.add_argument("--model", default=None,
                        help="embedder model name or path (in-process)")
    parser.add_argument("--runtime", choices=["torch", "onnx"], default=None,
                        help="embedder runtime (in-process; default: the config's)")
    parser.add_argument("--quantize", choices=["none", "int8"], default=None,
                        help="embedder quantisation, with --runtime onnx (in-process)")
    parser.add_argument("--long-passages", choices=["truncate", "mean"], default=None,
                        help="passages longer than the embedder's input: first window or the "
                        "mean of all windows (in-process; default: the config's)")
    parser.add_argument("--max-queries", type=positive_int, default=None,
                        help="first N query ids")
    parser.add_argument("--top-k", type=positive_int, default=100, help="candidates per query")
    parser.add_argument("--service", action="store_true",
                        help="evaluate the running service at --url instead of in-process")
    parser.add_argument("--no-ingest", action="store_true",
                        help="with --service: corpus is indexed")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    # Imported here: the in-process path loads models, and other commands need none of it.
    from ragserve.config import EmbedderConfig
    from ragserve.eval.beir import load_beir
    from ragserve.eval.runner import EvalSettings, parse_mode, run_in_process, run_over_http

    ds = load_beir(args.dataset, args.split, max_queries=args.max_queries)
    settings = EvalSettings(top_k=args.top_k, prefetch_min=args.prefetch_min)
    if args.reranker_fallback:
        settings.reranker = settings.reranker.model_copy(
            update={"fallback": args.reranker_fallback})
    overrides = {k: v for k, v in (("model", args.model), ("runtime", args.runtime),
                                   ("quantize", args.quantize),
                                   ("long_passages", args.long_passages)) if v}
    if overrides:
        try:
            settings.embedder = EmbedderConfig.model_validate(
                {**settings.embedder.model_dump(), **overrides})
        except ValueError as exc:
            raise SystemExit(f"ragserve eval: {exc}") from None
    progress = functools.partial(Progress, leave=False)
    print(f"{ds.name} ({args.split}): {len(ds.corpus)} documents, {len(ds.queries)} queries")
    if args.service:
        results, info = asyncio.run(run_over_http(
            ds, ctx.url, settings, ingest=not args.no_ingest, api_key=ctx.api_key,
            progress=progress,
        ))
    else:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        try:
            for m in modes:
                parse_mode(m)
            if args.fusion_weights:
                settings.fusion_weights = [float(w) for w in args.fusion_weights.split(",")]
            if args.fusions:
                settings.fusions = [f.strip() for f in args.fusions.split(",")]
                if not set(settings.fusions) <= {"rrf", "dbsf"}:
                    raise ValueError("fusions are rrf and dbsf")
        except ValueError as exc:
            eprint(f"error: {exc}")
            return EXIT_ERROR
        if not modes:
            eprint("error: no modes given")
            return EXIT_ERROR
        results, info = asyncio.run(run_in_process(ds, settings, modes, progress=progress))
    print("  ".join(f"{k}={v}" for k, v in info.items()))
    header = f"{'mode':40} {'nDCG@10':>8} {'R@10':>8} {'R@100':>8} {'MRR@10':>8} {'q/s':>7}"
    print(header)
    print("-" * len(header))
    for r in results:
        m = r.metrics
        print(f"{r.mode:40} {m['ndcg@10']:8.4f} {m['recall@10']:8.4f} {m['recall@100']:8.4f} "
              f"{m['mrr@10']:8.4f} {r.queries / max(r.seconds, 1e-9):7.1f}")
    if args.json:
        args.json.write_text(json.dumps({"dataset": ds.name, "split": args.split, **info,
                                         "results": [r.as_dict() for r in results]}, indent=2))
    return EXIT_OK
