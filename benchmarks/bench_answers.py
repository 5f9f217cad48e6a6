"""Answers a user can trust (issue 18): ask the embedded default questions about its own docs.

The same corpus ``make serve`` ingests (the paths in ``scripts/serve_local.sh``), the same
stage code and settings as ``configs/local.yaml`` — ONNX int8 MiniLM embedder, Qdrant local
mode (in a temp folder), the configured reranker (offline: its fallback scorer), the
configured generator chain — run in process around one ``RAGPipeline``, no Ray. Every
question of ``benchmarks/data/docs_qa.jsonl`` goes through ``pipeline.query`` one after
another, and each answer gets these verdicts:

- **correctly cited** (answerable): a passage the answer cites (``cited``) holds the evidence;
- **answer states the evidence** (answerable): ``evidence_coverage`` ≥ 0.6, and
  **answered and cited**: that and correctly cited — a cited chunk is ~1,000 tokens, so
  "correctly cited" alone is lenient;
- **evidence retrieved** (answerable): any passage given to the generator holds it — with the
  first, this tells a retrieval miss from a generation miss;
- **unsupported served as grounded**: the answer is not flagged ``degraded`` and is not an
  "I don't know", yet a sentence of it is not supported by the passages it cites
  (``sentence_support`` below, printed with the results; ``window_support``, stricter, holds
  each sentence to two consecutive sentences of one cited passage);
- **"I don't know"** (unanswerable): the answer cites no passage and says nothing was found
  (``idk_wording``: the pipeline's and the extractive backend's ``NO_PASSAGES_ANSWER`` and a
  few common not-found phrasings);
- degraded / answered by a fallback / replaced after a grounding check, latency per answer,
  and everything again per generator backend.

Only the public pipeline API is used, so the script measures whatever answer path is there.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_answers.py --generator extractive \\
        --out /tmp/answers-extractive.jsonl
    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_answers.py --limit 20 \\
        --out /tmp/answers-local.jsonl

``--generator local|extractive`` replaces the configured chain (``local``: the configured
local model with the configured fallbacks; ``extractive``: that backend alone); ``--limit N``
asks the first N answerable and the first N unanswerable questions.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ragserve.lexical import stem, tokenize  # noqa: E402

QUESTIONS = ROOT / "benchmarks" / "data" / "docs_qa.jsonl"
CONFIG = ROOT / "configs" / "local.yaml"
SERVE_LOCAL = ROOT / "scripts" / "serve_local.sh"
UNSUPPORTED_BELOW = 0.5
STATES_EVIDENCE_AT = 0.6
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
               "TOKENIZERS_PARALLELISM": "false"}


# ----------------------------------------------------------------------- the question set


def normalise(text: str) -> str:
    """Whitespace collapsed, case folded: how evidence is matched against passage text."""
    return " ".join(text.split()).casefold()


def load_questions(path: Path = QUESTIONS) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                row = json.loads(line)
                missing = {"id", "question", "evidence"} - set(row)
                if missing:
                    raise ValueError(f"{path}:{number}: missing {sorted(missing)}")
                rows.append(row)
    return rows


def served_paths(script: Path = SERVE_LOCAL) -> list[str]:
    """The paths ``make serve`` ingests: the arguments of the ``ragserve ... ingest`` line."""
    m = re.search(r"^\s*ragserve\b.*?\bingest\s+(.+?)\s+--root\b", script.read_text(), re.M)
    if m is None:
        raise ValueError(f"{script}: no 'ragserve ... ingest PATHS --root' line")
    return m.group(1).split()


# ----------------------------------------------------------------------- the judges


_MARKER = re.compile(r"\[\s*\d+(?:\s*[-–,;]\s*\d+)*\s*\]")
# A sentence ends at . ! ? (with the citation markers right after it) before whitespace, at a
# blank line, or before a list item; a single line break is not an end (the docs, and so the
# extractive answers, wrap sentences over lines).
_SENTENCE_END = re.compile(
    r"[.!?](?:\s*\[\s*\d+(?:\s*[-–,;]\s*\d+)*\s*\])*(?=\s|$)|\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)])\s)")


def content_terms(text: str) -> set[str]:
    """Stemmed content words (``ragserve.lexical``: stopwords out), citation markers removed."""
    return {stem(t) for t in tokenize(_MARKER.sub(" ", text))}


def answer_sentences(answer: str) -> list[str]:
    """The answer's sentences (each with its markers) that carry at least one content word."""
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(answer):
        pieces.append(answer[start:m.end()])
        start = m.end()
    pieces.append(answer[start:])
    return [" ".join(p.split()) for p in pieces if content_terms(p)]


def sentence_support(sentence: str, cited_texts: list[str]) -> float:
    """Share of the sentence's content words found in the cited passages (all of them
    together); 0.0 when nothing is cited. Below UNSUPPORTED_BELOW (0.5): unsupported."""
    terms = content_terms(sentence)
    if not terms:
        return 1.0
    passages: set[str] = set()
    for text in cited_texts:
        passages |= content_terms(text)
    return len(terms & passages) / len(terms)


def window_support(sentence: str, cited_texts: list[str], window: int = 2) -> float:
    """The stricter judge: the best coverage of the sentence's content words by any
    ``window`` consecutive sentences of one cited passage. A ~1,000-token chunk holds most
    everyday words of its topic, so whole-passage coverage passes recombined nonsense;
    two sentences rarely do."""
    terms = content_terms(sentence)
    if not terms:
        return 1.0
    best = 0.0
    for text in cited_texts:
        parts = [content_terms(p) for p in answer_sentences(text)]
        for i in range(max(1, len(parts) - window + 1)):
            held = set().union(*parts[i:i + window]) if parts else set()
            best = max(best, len(terms & held) / len(terms))
    return best


def evidence_coverage(answer: str, evidence: str) -> float:
    """Share of the evidence's content words that the answer itself contains. A passage is a
    ~1,000-token chunk, so citing the one that holds the evidence does not mean the answer
    says it; at STATES_EVIDENCE_AT (0.6) or more, the answer states the evidence."""
    terms = content_terms(evidence)
    return len(terms & content_terms(answer)) / len(terms) if terms else 0.0


def _idk_constants() -> list[str]:
    from ragserve.generation.extractive import NO_PASSAGES_ANSWER as EXTRACTIVE_NONE
    from ragserve.pipeline.answers import NO_PASSAGES_ANSWER as PIPELINE_NONE

    return [PIPELINE_NONE, EXTRACTIVE_NONE]


_NOT_FOUND = re.compile(
    r"\b(?:i (?:do not|don't|could not|couldn't|cannot|can't) (?:know|find|answer)"
    r"|(?:is|are) not (?:mentioned|covered|stated|described|found) in"
    r"|no (?:relevant )?(?:passages?|information|documents?) (?:about|on|found|relevant)"
    r"|(?:passages|documents|context|sources) (?:do not|don't|does not|doesn't) "
    r"(?:say|mention|contain|cover|describe))", re.I)


def idk_wording(answer: str) -> bool:
    """The answer says nothing relevant was found: one of the two NO_PASSAGES_ANSWER
    constants (the pipeline's, the extractive backend's), or a common not-found phrasing."""
    text = normalise(answer)
    return any(normalise(c) in text for c in _idk_constants()) or bool(_NOT_FOUND.search(text))


def verdicts(row: dict[str, Any], answer: str, citations: list[dict[str, Any]],
             degraded: bool) -> dict[str, Any]:
    """Every verdict of one answer. ``citations``: ``{"text", "cited"}`` per passage given
    to the generator."""
    cited_texts = [c["text"] for c in citations if c["cited"]]
    cites_nothing = not cited_texts
    wording = idk_wording(answer) if answer.strip() else False
    idk = cites_nothing and wording
    support = [{"sentence": s, "coverage": round(sentence_support(s, cited_texts), 3),
                "window_coverage": round(window_support(s, cited_texts), 3)}
               for s in answer_sentences(answer)]
    served_as_grounded = bool(answer.strip()) and not degraded and not idk
    out: dict[str, Any] = {
        "cites_nothing": cites_nothing,
        "idk_wording": wording,
        "idk": idk,
        "served_as_grounded": served_as_grounded,
        "unsupported": served_as_grounded and any(
            s["coverage"] < UNSUPPORTED_BELOW for s in support),
        "unsupported_strict": served_as_grounded and any(
            s["window_coverage"] < UNSUPPORTED_BELOW for s in support),
        "sentence_support": support,
    }
    evidence = row.get("evidence")
    if evidence is not None:
        needle = normalise(evidence)
        holds = [needle in normalise(c["text"]) for c in citations]
        out["evidence_retrieved"] = any(holds)
        out["correctly_cited"] = any(h and c["cited"] for h, c in zip(holds, citations))
        out["evidence_coverage"] = round(evidence_coverage(answer, evidence), 3)
        out["states_evidence"] = out["evidence_coverage"] >= STATES_EVIDENCE_AT
        out["answered_and_cited"] = out["states_evidence"] and out["correctly_cited"]
    return out


JUDGES = (content_terms, answer_sentences, sentence_support, window_support, evidence_coverage,
          idk_wording)


# ----------------------------------------------------------------------- the pipeline


def _app_args(config_path: Path, generator: str | None):
    import yaml

    from graphs.args import RagAppArgs

    raw = yaml.safe_load(config_path.read_text())
    app = next(a for a in raw["applications"] if a.get("import_path") == "graphs.rag:build_app")
    args = RagAppArgs.model_validate(app.get("args") or {})
    gen = args.generator.config
    if generator == "extractive":
        gen = gen.model_copy(update={"backend": _backend("extractive"), "fallbacks": [],
                                     "routing": None})
    elif generator == "local" and gen.backend.backend != "local":
        gen = gen.model_copy(update={"backend": _backend("local")})
    args.generator.config = type(gen).model_validate(gen.model_dump())
    return args


def _backend(name: str):
    from ragserve.config import GeneratorConfig

    return GeneratorConfig.model_validate({"backend": {"backend": name}}).backend


async def _build(args, folder: Path, log):
    from ragserve.embedding import LocalEmbedder, SentenceTransformerEmbedder
    from ragserve.generation.factory import build_generation_chain
    from ragserve.generation.in_process import InProcessGenerator
    from ragserve.pipeline import RAGPipeline, StageSet
    from ragserve.reranking.factory import load_scorer
    from ragserve.reranking.local import ScorerReranker
    from ragserve.retrieval.qdrant import QdrantRetriever

    t = time.perf_counter()
    encoder = SentenceTransformerEmbedder(args.embedder.config)
    await asyncio.to_thread(encoder.warm_up)
    log(f"embedder {encoder.name} loaded in {time.perf_counter() - t:.1f} s")
    retriever = QdrantRetriever(args.retriever.config.model_copy(
        update={"path": str(folder / "qdrant")}))
    await retriever.warm_up()
    scorer, reason = await asyncio.to_thread(load_scorer, args.reranker.config)
    log(f"reranker {scorer.name}" + (f" (fallback: {reason[:120]})" if reason else ""))
    t = time.perf_counter()
    chain = build_generation_chain(args.generator.config,
                                   text_encoder=SentenceTransformerEmbedder)
    await asyncio.to_thread(chain.warm_up)
    log(f"generator chain {chain.name} loaded in {time.perf_counter() - t:.1f} s")
    stages = StageSet(embedder=LocalEmbedder(encoder), retriever=retriever,
                      reranker=ScorerReranker(scorer, reason),
                      generator=InProcessGenerator(chain))
    pipeline = RAGPipeline(stages, config=args.ingress.config)
    await pipeline.startup()
    return pipeline, retriever


async def _ingest(pipeline, paths: list[str], log) -> None:
    from ragserve.cli.ingest import batches
    from ragserve.ingest.loaders import load_documents
    from ragserve.schemas import IngestRequest

    t = time.perf_counter()
    docs = list(load_documents([ROOT / p for p in paths], root=ROOT))
    chunks = 0
    for batch in batches(docs, 16, 8_000_000):  # the CLI's defaults
        chunks += (await pipeline.ingest(IngestRequest(documents=batch))).chunks_embedded
    log(f"ingested {len(docs)} documents ({chunks} chunks) from {' '.join(paths)} "
        f"in {time.perf_counter() - t:.1f} s")


async def _ask(pipeline, row: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    from ragserve.schemas import QueryRequest

    t = time.perf_counter()
    resp = await pipeline.query(QueryRequest(query=row["question"], max_tokens=max_tokens))
    latency_ms = (time.perf_counter() - t) * 1000
    citations = [{"number": c.number, "doc_id": c.doc_id, "cited": c.cited, "text": c.text}
                 for c in resp.citations]
    attempts = [a.model_dump(mode="json") for a in resp.generation]
    out = {
        "id": row["id"], "question": row["question"], "evidence": row.get("evidence"),
        "reference": row.get("answer"), "source": row.get("source"),
        "answer": resp.answer, "degraded": resp.degraded, "warnings": resp.warnings,
        "backend": resp.backends.generator, "attempts": attempts,
        "latency_ms": round(latency_ms, 1), "generate_ms": round(resp.timings.generate_ms, 1),
        # when the answer's first text was ready, from the request's start (the service's own
        # StageTimings.first_token_ms: a replaced answer's counts the model's try too)
        "first_token_ms": resp.timings.first_token_ms,
        "prompt_tokens": resp.usage.prompt_tokens,
        "finish_reason": resp.finish_reason,
        "citations": [{**c, "holds_evidence": row.get("evidence") is not None
                       and normalise(row["evidence"]) in normalise(c["text"])}
                      for c in citations],
    }
    out["verdicts"] = verdicts(row, resp.answer, citations, resp.degraded)
    out["path"] = " > ".join(f"{a['backend']}:{a['outcome']}" for a in attempts) or "none"
    out["fallback_answered"] = any(a["outcome"] != "ok" for a in attempts) and resp.backends.generator is not None
    out["replaced"] = any(a["outcome"] == "ungrounded" for a in attempts)
    return out


# ----------------------------------------------------------------------- the report


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def _rate(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f}%)" if d else "-"


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    ans = [r for r in results if r["evidence"] is not None]
    una = [r for r in results if r["evidence"] is None]
    lat = [r["latency_ms"] for r in results]
    ttft = [r["first_token_ms"] for r in results if r.get("first_token_ms") is not None]
    prompts = [r["prompt_tokens"] for r in results if r.get("prompt_tokens")]
    count = lambda rows, key: sum(1 for r in rows if r["verdicts"][key])  # noqa: E731
    return {
        "questions": len(results), "answerable": len(ans), "unanswerable": len(una),
        "correctly_cited": count(ans, "correctly_cited"),
        "evidence_retrieved": count(ans, "evidence_retrieved"),
        "states_evidence": count(ans, "states_evidence"),
        "answered_and_cited": count(ans, "answered_and_cited"),
        "retrieved_not_cited": sum(1 for r in ans if r["verdicts"]["evidence_retrieved"]
                                   and not r["verdicts"]["correctly_cited"]),
        "idk_on_answerable": count(ans, "idk"),
        "served_as_grounded": count(results, "served_as_grounded"),
        "unsupported_served_as_grounded": count(results, "unsupported"),
        "unsupported_strict": count(results, "unsupported_strict"),
        "grounded_without_evidence": sum(1 for r in ans if r["verdicts"]["served_as_grounded"]
                                         and not r["verdicts"]["states_evidence"]),
        "unsupported_answerable": count(ans, "unsupported"),
        "unsupported_unanswerable": count(una, "unsupported"),
        "idk_unanswerable": count(una, "idk"),
        "cites_nothing_unanswerable": count(una, "cites_nothing"),
        "idk_wording_unanswerable": count(una, "idk_wording"),
        "degraded": sum(1 for r in results if r["degraded"]),
        "fallback_answered": sum(1 for r in results if r["fallback_answered"]),
        "replaced_ungrounded": sum(1 for r in results if r["replaced"]),
        "no_answer": sum(1 for r in results if not r["answer"].strip()),
        "latency_p50_ms": round(pct(lat, 50), 1), "latency_p95_ms": round(pct(lat, 95), 1),
        "first_token_p50_ms": round(pct(ttft, 50), 1) if ttft else None,
        "first_token_p95_ms": round(pct(ttft, 95), 1) if ttft else None,
        "prompt_tokens_mean": round(sum(prompts) / len(prompts)) if prompts else None,
    }


def print_report(results: list[dict[str, Any]], settings: str) -> dict[str, Any]:
    s = summarise(results)
    a, u = s["answerable"], s["unanswerable"]
    print(f"\n== answers over the project's docs: {settings}")
    rows = [
        ("answerable: correctly cited", _rate(s["correctly_cited"], a)),
        ("answerable: answer states the evidence (coverage >= 0.6)", _rate(s["states_evidence"], a)),
        ("answerable: states it and cites a passage holding it", _rate(s["answered_and_cited"], a)),
        ("answerable: evidence retrieved (given to the generator)", _rate(s["evidence_retrieved"], a)),
        ("answerable: retrieved but not cited", _rate(s["retrieved_not_cited"], a)),
        ("answerable: said 'I don't know'", _rate(s["idk_on_answerable"], a)),
        ("all: unsupported served as grounded", _rate(s["unsupported_served_as_grounded"], len(results))),
        ("all: the same, stricter judge (window_support)", _rate(s["unsupported_strict"], len(results))),
        ("answerable: served as grounded, evidence not stated", _rate(s["grounded_without_evidence"], a)),
        ("  unsupported (whole-passage judge): answerable / unanswerable",
         f"{s['unsupported_answerable']} / {s['unsupported_unanswerable']}"),
        ("unanswerable: 'I don't know' (cites nothing + not-found wording)", _rate(s["idk_unanswerable"], u)),
        ("unanswerable: cites nothing", _rate(s["cites_nothing_unanswerable"], u)),
        ("unanswerable: not-found wording", _rate(s["idk_wording_unanswerable"], u)),
        ("flagged degraded", _rate(s["degraded"], len(results))),
        ("answered by a fallback backend", _rate(s["fallback_answered"], len(results))),
        ("replaced after the grounding check ('ungrounded')", _rate(s["replaced_ungrounded"], len(results))),
        ("empty answer (passages only)", _rate(s["no_answer"], len(results))),
        ("latency per answer p50 / p95", f"{s['latency_p50_ms']:,.0f} / {s['latency_p95_ms']:,.0f} ms"),
        ("first text of the answer p50 / p95 (timings.first_token_ms)",
         f"{s['first_token_p50_ms']:,.0f} / {s['first_token_p95_ms']:,.0f} ms"
         if s["first_token_p50_ms"] is not None else "-"),
        ("prompt tokens per answer (mean)", str(s["prompt_tokens_mean"] or "-")),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        groups[(str(r["backend"]), r["path"])].append(r)
    print("\n  by generator backend and attempt path:")
    print(f"  {'backend':<44} {'attempts':<60} {'n':>3} {'cited':>9} {'ans+cit':>9} {'unsupp.':>8} "
          f"{'idk(na)':>8} {'degr.':>6} {'p50 ms':>8}")
    for (backend, path), rs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        g = summarise(rs)
        print(f"  {backend[:44]:<44} {path[:60]:<60} {len(rs):>3} "
              f"{g['correctly_cited']:>4}/{g['answerable']:<4} "
              f"{g['answered_and_cited']:>4}/{g['answerable']:<4} "
              f"{g['unsupported_served_as_grounded']:>8} "
              f"{g['idk_unanswerable']:>3}/{g['unanswerable']:<4} {g['degraded']:>6} "
              f"{g['latency_p50_ms']:>8,.0f}")
    reasons = Counter(a.get("reason") or "-" for r in results for a in r["attempts"]
                      if a["outcome"] != "ok")
    if reasons:
        print("  attempts not ok, by reason: " + ", ".join(f"{k} ×{v}" for k, v in reasons.most_common()))
    return s


# ----------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    log = lambda msg: print(f"[bench_answers] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    rows = load_questions(args.questions)
    if args.limit is not None:
        rows = ([r for r in rows if r["evidence"] is not None][: args.limit]
                + [r for r in rows if r["evidence"] is None][: args.limit])
    app_args = _app_args(args.config, args.generator)
    with tempfile.TemporaryDirectory(prefix="ragserve-answers-") as tmp:
        pipeline, retriever = await _build(app_args, Path(tmp), log)
        try:
            await _ingest(pipeline, served_paths(), log)
            results = []
            for i, row in enumerate(rows, start=1):
                res = await _ask(pipeline, row, args.max_tokens)
                results.append(res)
                v = res["verdicts"]
                mark = ("cited" if v.get("correctly_cited") else "retrieved"
                        if v.get("evidence_retrieved") else "miss") if row["evidence"] else (
                    "idk" if v["idk"] else "answered")
                log(f"{i}/{len(rows)} {row['id']} {res['latency_ms']:,.0f} ms {res['path']} "
                    f"{mark}{' UNSUPPORTED' if v['unsupported'] else ''}")
        finally:
            await retriever.aclose()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", choices=["local", "extractive"], default=None,
                   help="replace the configured generator chain (default: as configured)")
    p.add_argument("--limit", type=int, default=None,
                   help="first N answerable and first N unanswerable questions")
    p.add_argument("--out", type=Path, default=None, help="every answer and verdict, JSONL")
    p.add_argument("--questions", type=Path, default=QUESTIONS)
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--max-tokens", type=int, default=128)
    args = p.parse_args(argv)
    for key, value in OFFLINE_ENV.items():  # as configs/local.yaml's runtime_env sets them
        os.environ.setdefault(key, value)
    results = asyncio.run(run(args))
    print("judge (unsupported: a sentence's coverage < "
          f"{UNSUPPORTED_BELOW} against the passages the answer cites):")
    for fn in JUDGES:
        print(inspect.getsource(fn))
    settings = (f"{args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config}"
                f", generator {args.generator or 'as configured'}, max_tokens {args.max_tokens}"
                f", {len(results)} questions")
    summary = print_report(results, settings)
    if args.out is not None:
        with open(args.out, "w", encoding="utf-8") as f:
            for r in results:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"\n  every answer with its verdicts: {args.out}")
    print("\nsummary " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
