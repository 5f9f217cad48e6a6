"""Run a BEIR evaluation through the service's own stage code.

In process (default): the same ``RAGPipeline`` the ingress runs, around in-process backends
(sentence-transformers embedder, Qdrant local mode in a temp folder, the reranker's scorer).
Against a running app (``--url``): ``POST /v1/documents`` and ``POST /v1/search`` through
``ragserve.client.AsyncRagServeClient``.

Each mode is one ranking the pipeline can produce, ``RETRIEVAL[+rerank]``:
- ``dense``, ``sparse``, ``hybrid``: the retriever's order in that retrieval mode;
- ``...+rerank``: the configured reranker over those candidates (offline: the
  ``lexical_fusion`` fallback; ``EvalSettings.fusion_weights`` evaluates several weights);
- ``service``: whatever a running app answers (``--service``).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from tqdm import tqdm

from ragserve.client import AsyncRagServeClient
from ragserve.config import ChunkingConfig, EmbedderConfig, RerankerConfig, RetrieverConfig
from ragserve.eval.beir import BeirDataset, evaluate_run
from ragserve.schemas import IngestRequest, SearchRequest

__all__ = [
    "EvalSettings",
    "ModeResult",
    "ProgressBar",
    "ProgressFactory",
    "run_in_process",
    "run_over_http",
]

DOC_BATCH = 128


class ProgressBar(Protocol):
    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...


class ProgressFactory(Protocol):
    """Makes the progress display of one phase (ingestion, one mode's queries)."""

    def __call__(self, *, total: int, desc: str, unit: str) -> ProgressBar: ...


def _tqdm_bar(*, total: int, desc: str, unit: str) -> ProgressBar:
    return tqdm(total=total, desc=desc, unit=unit, leave=False)


@dataclass
class EvalSettings:
    top_k: int = 100
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    reranker: RerankerConfig = field(default_factory=RerankerConfig)
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    concurrency: int = 8
    fusion_weights: list[float] | None = None  # lexical_fusion weights to compare
    fusions: list[str] | None = None  # hybrid fusions to compare: rrf, dbsf
    prefetch_min: int | None = None  # RetrieverConfig.prefetch_min (None: its default)


RETRIEVAL_MODES = ("dense", "sparse", "hybrid")


def parse_mode(mode: str) -> tuple[str, bool]:
    retrieval, _, rerank = mode.partition("+")
    if retrieval not in RETRIEVAL_MODES or rerank not in ("", "rerank"):
        raise ValueError(f"unknown mode {mode!r}: use dense|sparse|hybrid, optionally +rerank")
    return retrieval, bool(rerank)


@dataclass
class ModeResult:
    mode: str
    metrics: dict[str, float]
    queries: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "queries": self.queries, "seconds": round(self.seconds, 2),
                **{k: round(v, 4) for k, v in self.metrics.items()}}


def _documents(ds: BeirDataset) -> list[dict]:
    docs = []
    for did, d in ds.corpus.items():
        text = f"{d['title']}\n\n{d['text']}".strip() if d["title"] else d["text"]
        if text.strip():
            docs.append({"id": _safe_id(did), "text": text, "content_type": "general",
                         "metadata": {"beir_id": did}})
    return docs


def _safe_id(did: str) -> str:
    # BEIR ids are usually plain; prefix keeps them valid document ids whatever they hold.
    return "beir:" + "".join(c if c.isalnum() or c in "._:-" else "_" for c in did)


def _run_from_results(results: list[Any]) -> dict[str, float]:
    run: dict[str, float] = {}
    for r in results:
        did = r["metadata"]["beir_id"] if isinstance(r, dict) else r.metadata["beir_id"]
        score = r["score"] if isinstance(r, dict) else r.score
        run[did] = max(run.get(did, float("-inf")), float(score))  # a document = its best chunk
    return run


async def _ask_all(ds: BeirDataset, ask: Callable, concurrency: int, label: str,
                   progress: ProgressFactory) -> dict:
    sem = asyncio.Semaphore(concurrency)
    bar = progress(total=len(ds.queries), desc=label, unit="q")

    async def one(qid: str, text: str):
        async with sem:
            res = await ask(text)
            bar.update(1)
            return qid, _run_from_results(res)

    pairs = await asyncio.gather(*(one(q, t) for q, t in ds.queries.items()))
    bar.close()
    return dict(pairs)


async def run_in_process(ds: BeirDataset, settings: EvalSettings, modes: list[str], *,
                         progress: ProgressFactory = _tqdm_bar) -> tuple[list[ModeResult], dict]:
    from ragserve.config import IngressConfig, LimitsConfig
    from ragserve.embedding import SentenceTransformerEmbedder
    from ragserve.embedding.local import LocalEmbedder
    from ragserve.ingest.chunking import TokenChunker
    from ragserve.pipeline import RAGPipeline, StageSet
    from ragserve.reranking.factory import load_scorer
    from ragserve.reranking.lexical import RetrievalOrderScorer
    from ragserve.reranking.local import ScorerReranker
    from ragserve.retrieval.qdrant import QdrantRetriever

    backend = SentenceTransformerEmbedder(settings.embedder)
    await asyncio.to_thread(backend.warm_up)
    embedder = LocalEmbedder(backend)
    with tempfile.TemporaryDirectory(prefix="ragserve-eval-") as tmp:
        overrides = {} if settings.prefetch_min is None else {"prefetch_min": settings.prefetch_min}
        retriever = QdrantRetriever(RetrieverConfig(path=str(Path(tmp) / "qdrant"), collection="eval",
                                                    **overrides))
        await retriever.warm_up()
        parsed = [parse_mode(m) for m in modes]
        rerankers: dict[str, ScorerReranker] = {"none": ScorerReranker(RetrievalOrderScorer())}
        if any(r for _, r in parsed):
            weights = settings.fusion_weights or [settings.reranker.fusion_weight]
            for w in weights:
                update: dict[str, Any] = {"fusion_weight": w}
                if settings.fusion_weights:  # weights to compare imply the lexical fallback
                    update["fallback"] = "lexical_fusion"
                cfg = settings.reranker.model_copy(update=update)
                scorer, reason = load_scorer(cfg)
                label = scorer.name if len(weights) == 1 else f"{scorer.name}@{w:g}"
                rerankers[label] = ScorerReranker(scorer, reason)
                if reason is None:  # a cross-encoder loaded: the weight does not apply
                    break
        chunker = TokenChunker(settings.chunking)
        config = IngressConfig(stage_timeout_s=600, stage_timeouts_s={"reranker": 600},
                               limits=LimitsConfig(max_query_chars=100_000),
                               chunking=settings.chunking.model_copy(update={"embed_batch_size": 64}))

        def pipeline(reranker):
            return RAGPipeline(StageSet(embedder=embedder, retriever=retriever, reranker=reranker),
                               config=config, chunker=chunker)

        first = pipeline(rerankers["none"])
        await first.startup()
        info = {"embedder": backend.name, "long_passages": settings.embedder.long_passages,
                "documents": 0, "chunks": 0}
        t = time.perf_counter()
        docs = _documents(ds)
        bar = progress(total=-(-len(docs) // DOC_BATCH), desc="ingest", unit="batch")
        for i in range(0, len(docs), DOC_BATCH):
            res = await first.ingest(IngestRequest.model_validate({"documents": docs[i:i + DOC_BATCH]}))
            info["chunks"] += sum(d.chunks for d in res.documents)
            bar.update(1)
        bar.close()
        info["documents"] = len(docs)
        info["ingest_s"] = round(time.perf_counter() - t, 1)
        results = []
        base_config = retriever.config
        runs = [(r, rr, f) for r, rr in parsed
                for f in ((settings.fusions or [base_config.fusion]) if r == "hybrid" else [None])]
        for retrieval, rerank, fusion in runs:
            if fusion is not None:  # fusion is read at search time: one index serves all
                retriever.config = base_config.model_copy(update={"fusion": fusion})
            labels = [k for k in rerankers if k != "none"] if rerank else ["none"]
            for label in labels:
                pipe = pipeline(rerankers[label])
                await pipe.startup()
                t = time.perf_counter()

                async def ask(text, pipe=pipe, retrieval=retrieval):
                    req = SearchRequest(query=text, top_k=settings.top_k,
                                        rerank_top_n=settings.top_k, mode=retrieval)
                    return (await pipe.search(req)).results

                name = retrieval if fusion is None or not settings.fusions else f"{retrieval}/{fusion}"
                name = name if label == "none" else f"{name}+rerank ({label})"
                run = await _ask_all(ds, ask, settings.concurrency, name, progress)
                results.append(ModeResult(name, evaluate_run(ds.qrels, run), len(ds.queries),
                                          time.perf_counter() - t))
        await retriever.aclose()
    return results, info


async def run_over_http(ds: BeirDataset, url: str, settings: EvalSettings, *, ingest: bool = True,
                        api_key: str | None = None, progress: ProgressFactory = _tqdm_bar,
                        ) -> tuple[list[ModeResult], dict]:
    """The ``service`` mode: ingest the corpus (unless ``ingest`` is false), then search.

    Calls go through the client, so they are retried on 429/503 and connection errors; any
    other failure raises the client's typed error and ends the run.
    """
    async with AsyncRagServeClient(url, api_key=api_key, timeout_s=300) as client:
        info: dict[str, Any] = {"url": url}
        if ingest:
            t = time.perf_counter()
            docs = _documents(ds)
            bar = progress(total=-(-len(docs) // DOC_BATCH), desc="ingest", unit="batch")
            for i in range(0, len(docs), DOC_BATCH):
                await client.ingest(docs[i:i + DOC_BATCH])
                bar.update(1)
            bar.close()
            info.update(documents=len(docs), ingest_s=round(time.perf_counter() - t, 1))

        async def ask(text):
            answer = await client.search(text[:4000], top_k=settings.top_k,
                                         rerank_top_n=settings.top_k)
            return answer.results

        t = time.perf_counter()
        run = await _ask_all(ds, ask, settings.concurrency, "service", progress)
        return [ModeResult("service", evaluate_run(ds.qrels, run), len(ds.queries),
                           time.perf_counter() - t)], info
