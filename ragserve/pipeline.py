"""The RAG request flow across the four stages, independent of Ray.

The ingress deployment builds one ``RAGPipeline`` around DeploymentHandle adapters; tests and
the evaluation harness can build it around in-process backends. Every stage object satisfies
its role's protocol (``ragserve.embedding.Embedder``, ``ragserve.retrieval.Retriever``, ...).

Failure contract:
- embedder or retriever failure → ``StageUnavailableError`` (503, retryable); nothing else to do
  without them.
- reranker failure → the retriever's order, ``degraded=True`` and a warning.
- generator failure → the ranked passages without an answer, ``degraded=True``.
- each stage call is bounded by ``stage_timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Awaitable, TypeVar

from ragserve.errors import (
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RagServeError,
    StageTimeoutError,
    StageUnavailableError,
)
from ragserve.ingest.chunking import TokenChunker, chunk_document
from ragserve.reranking.factory import order_by_scores
from ragserve.reranking.lexical import RetrievalOrderScorer
from ragserve.schemas import (
    Citation,
    DeleteResponse,
    DocumentChunks,
    DocumentResult,
    EmbedderInfo,
    EmbeddingItem,
    EmbeddingsRequest,
    EmbeddingsResponse,
    GenerationRequest,
    GenerationResult,
    IngestRequest,
    IngestResponse,
    QueryRequest,
    QueryResponse,
    ScoredChunk,
    SearchRequest,
    SearchResponse,
    StageBackends,
    StageTimings,
    Usage,
)
from ragserve.text import query_fingerprint, sanitize_query

__all__ = ["RAGPipeline", "PipelineSettings"]

log = logging.getLogger("ragserve.pipeline")
T = TypeVar("T")


class PipelineSettings:
    """The slice of ``IngressConfig`` the pipeline needs (kept as plain values)."""

    def __init__(
        self,
        *,
        stage_timeout_s: float = 60.0,
        max_query_chars: int = 4000,
        max_documents_per_request: int = 256,
        max_document_chars: int = 2_000_000,
        embed_batch_size: int = 64,
        retrieval_turns: int = 1,
        stage_timeouts_s: dict[str, float] | None = None,
    ) -> None:
        self.stage_timeout_s = stage_timeout_s
        self.stage_timeouts_s = dict(stage_timeouts_s or {})
        self.max_query_chars = max_query_chars
        self.max_documents_per_request = max_documents_per_request
        self.max_document_chars = max_document_chars
        self.embed_batch_size = embed_batch_size
        self.retrieval_turns = retrieval_turns

    def timeout_for(self, stage: str) -> float:
        return self.stage_timeouts_s.get(stage, self.stage_timeout_s)


RETRIEVAL_ORDER = RetrievalOrderScorer()


class _PassThroughProbe:
    """Whether the reranker stage would only keep the retriever's order (its ``retrieval``
    fallback: no cross-encoder configured or loadable), so a request can skip that hop.

    Asked in the background, never on a request's path: at most once per ``ttl_s``, and until
    the first answer (or after a failed probe) requests call the reranker as usual. A reranker
    redeployed with a model is seen within ``ttl_s``."""

    def __init__(self, reranker: Any, ttl_s: float = 10.0) -> None:
        self._reranker = reranker
        self._ttl_s = ttl_s
        self._value = False
        self._checked_at = float("-inf")
        self._task: asyncio.Task | None = None

    def passthrough(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= self._ttl_s and (self._task is None or self._task.done()):
            self._checked_at = now
            self._task = asyncio.get_running_loop().create_task(self._probe())
        return self._value

    async def _probe(self) -> None:
        try:
            health = await asyncio.wait_for(self._reranker.health(), timeout=5.0)
            self._value = (health or {}).get("backend") == RETRIEVAL_ORDER.name
        except Exception:  # noqa: BLE001 - unknown: call the stage, which has its own fallbacks
            self._value = False


class _Clock:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def ms(self, since: float) -> float:
        return round((time.perf_counter() - since) * 1000, 2)


class RAGPipeline:
    def __init__(
        self,
        *,
        embedder: Any,
        retriever: Any,
        reranker: Any,
        generator: Any | None,
        chunker: TokenChunker,
        settings: PipelineSettings | None = None,
    ) -> None:
        self.embedder = embedder
        self.retriever = retriever
        self.reranker = reranker
        self.generator = generator
        self.chunker = chunker
        self.settings = settings or PipelineSettings()
        self.embedder_info: EmbedderInfo | None = None
        self.retriever_name: str | None = None
        self._reranker_probe = _PassThroughProbe(reranker)

    # ------------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        """Check the index matches the embedder (raises ``ConfigurationError`` if not)."""
        self.embedder_info = await self._call("embedder", self.embedder.info())
        await self._call("retriever", self.retriever.ensure_collection(self.embedder_info))
        health = await self._call("retriever", self.retriever.health())
        self.retriever_name = health.get("backend")

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        stages: dict[str, Any] = {
            "embedder": self.embedder,
            "retriever": self.retriever,
            "reranker": self.reranker,
        }
        if self.generator is not None:
            stages["generator"] = self.generator

        async def probe(name: str, stage: Any) -> tuple[str, dict]:
            try:
                detail = await asyncio.wait_for(stage.health(), timeout=5.0)
                return name, {"ready": True, **(detail or {})}
            except Exception as exc:  # readiness reports, it never raises
                return name, {"ready": False, "error": _describe(exc)}

        results = dict(await asyncio.gather(*(probe(n, s) for n, s in stages.items())))
        return all(r["ready"] for r in results.values()), results

    # ------------------------------------------------------------------ helpers

    async def _call(self, stage: str, awaitable: Awaitable[T]) -> T:
        timeout = self.settings.timeout_for(stage)
        try:
            return await asyncio.wait_for(awaitable, timeout=timeout)
        except asyncio.TimeoutError as exc:
            raise StageTimeoutError(
                f"{stage} did not answer within {timeout:g}s", details={"stage": stage},
            ) from exc
        except RagServeError:
            raise
        except Exception as exc:
            raise StageUnavailableError(
                f"{stage} is unavailable: {_describe(exc)}", details={"stage": stage}
            ) from exc

    def _clean_query(self, query: str) -> str:
        if len(query) > self.settings.max_query_chars:
            raise InvalidRequestError(
                f"query is {len(query)} characters; the limit is {self.settings.max_query_chars}"
            )
        cleaned = sanitize_query(query)
        if not cleaned:
            raise InvalidRequestError("query is empty after removing control characters")
        return cleaned

    # ------------------------------------------------------------------ search

    def _search_text(self, query: str, history: list[tuple[str, str]]) -> str:
        """A follow-up's retrieval query: the last ``retrieval_turns`` questions of the session,
        then this one ("and how do I scale it?" alone retrieves nothing useful)."""
        turns = self.settings.retrieval_turns
        earlier = [q for q, _ in history[-turns:]] if turns else []
        text = " ".join([*earlier, query])
        return text[-self.settings.max_query_chars:]

    async def _ranked(
        self, req: SearchRequest, history: list[tuple[str, str]] | None = None
    ) -> tuple[str, list[ScoredChunk], StageTimings, StageBackends, bool, list[str]]:
        question = self._clean_query(req.query)
        query = self._search_text(question, history) if history else question
        timings, backends, warnings = StageTimings(), StageBackends(), []
        degraded = False
        clock = _Clock()

        t = time.perf_counter()
        vectors = await self._call("embedder", self.embedder.embed([query], "query"))
        timings.embed_ms = clock.ms(t)
        backends.embedder = self.embedder_info.model if self.embedder_info else None

        t = time.perf_counter()
        candidates = await self._call(
            "retriever",
            self.retriever.search(vectors[0], req.top_k, req.filters, query_text=query, mode=req.mode),
        )
        timings.retrieve_ms = clock.ms(t)
        backends.retriever = self.retriever_name

        ranked = candidates[: req.rerank_top_n]
        if candidates and self._reranker_probe.passthrough():
            # The reranker would only keep the retriever's order: skip its hop.
            ranked = order_by_scores(candidates, RETRIEVAL_ORDER.score(query, candidates),
                                     req.rerank_top_n)
            backends.reranker = RETRIEVAL_ORDER.name
            timings.rerank_ms = 0.0
        elif candidates:
            t = time.perf_counter()
            try:
                result = await self._call(
                    "reranker", self.reranker.rerank(query, candidates, req.rerank_top_n)
                )
                ranked = result.chunks
                backends.reranker = result.backend
                degraded = degraded or result.degraded
            except RagServeError as exc:
                degraded = True
                backends.reranker = "retrieval-order"
                warnings.append(f"reranker unavailable, kept the retriever's order: {exc.message}")
                log.warning("reranker failed (%s); query=%s", exc.code, query_fingerprint(query))
            timings.rerank_ms = clock.ms(t)
        timings.total_ms = clock.ms(clock.start)
        return question, ranked, timings, backends, degraded, warnings

    async def search(self, req: SearchRequest) -> SearchResponse:
        _, ranked, timings, backends, degraded, warnings = await self._ranked(req)
        return SearchResponse(
            results=[_citation(i + 1, c) for i, c in enumerate(ranked)],
            timings=timings,
            backends=backends,
            degraded=degraded,
            warnings=warnings,
        )

    # ------------------------------------------------------------------ query

    def _require_generator(self) -> Any:
        if self.generator is None:
            raise NotFoundError("this application was built without a generator (search only)")
        return self.generator

    async def query(
        self, req: QueryRequest, *, history: list[tuple[str, str]] | None = None
    ) -> QueryResponse:
        """Answer ``req``; ``history`` holds the session's earlier (question, answer) turns."""
        generator = self._require_generator()
        history = history or []
        start = time.perf_counter()
        query, ranked, timings, backends, degraded, warnings = await self._ranked(req, history)
        if not ranked:
            timings.total_ms = round((time.perf_counter() - start) * 1000, 2)
            return QueryResponse(
                answer="I could not find any passages relevant to this question.",
                citations=[], usage=Usage(), timings=timings, backends=backends,
                degraded=degraded, warnings=warnings,
            )
        gen_req = GenerationRequest(query=query, passages=ranked, max_tokens=req.max_tokens,
                                    history=history)
        t = time.perf_counter()
        try:
            result: GenerationResult = await self._call("generator", generator.generate(gen_req))
        except RagServeError as exc:
            if isinstance(exc, InvalidRequestError):
                raise
            timings.generate_ms = round((time.perf_counter() - t) * 1000, 2)
            timings.total_ms = round((time.perf_counter() - start) * 1000, 2)
            log.warning("generator failed (%s); query=%s", exc.code, query_fingerprint(query))
            return QueryResponse(
                answer="",
                citations=[_citation(i + 1, c) for i, c in enumerate(ranked)],
                usage=Usage(), timings=timings, backends=backends, degraded=True,
                warnings=[*warnings, f"generator unavailable, returning passages only: {exc.message}"],
                generation=(exc.details or {}).get("attempts", []),
            )
        timings.generate_ms = round((time.perf_counter() - t) * 1000, 2)
        timings.total_ms = round((time.perf_counter() - start) * 1000, 2)
        backends.generator = result.backend
        if result.passages_dropped:
            warnings.append(f"{result.passages_dropped} passage(s) did not fit the context window")
        return QueryResponse(
            answer=result.text,
            citations=_numbered(ranked[: result.passages_used], result.cited),
            usage=result.usage, timings=timings, backends=backends, degraded=degraded,
            warnings=warnings, generation=result.attempts, route=result.route,
        )

    async def query_events(
        self, req: QueryRequest, *, history: list[tuple[str, str]] | None = None
    ) -> AsyncIterator[tuple[str, dict]]:
        """Server-sent events: ``meta`` (passages, timings so far), ``token`` deltas, then
        ``done`` (usage, cited passages, final timings) or ``error``."""
        generator = self._require_generator()
        history = history or []
        start = time.perf_counter()
        try:
            query, ranked, timings, backends, degraded, warnings = await self._ranked(req, history)
        except RagServeError as exc:
            yield "error", exc.to_dict()
            return
        yield "meta", {
            "citations": [_citation(i + 1, c).model_dump() for i, c in enumerate(ranked)],
            "timings": timings.model_dump(),
            "backends": backends.model_dump(),
        }
        if not ranked:
            yield "done", {"answer": "", "usage": Usage().model_dump(), "degraded": degraded,
                           "warnings": warnings, "cited": [], "timings": timings.model_dump()}
            return
        gen_req = GenerationRequest(query=query, passages=ranked, max_tokens=req.max_tokens,
                                    history=history)
        t = time.perf_counter()
        result: GenerationResult | None = None
        attempts: list = []
        try:
            async for item in generator.stream(gen_req):
                if "delta" in item:
                    yield "token", {"delta": item["delta"]}
                elif "result" in item:
                    result = item["result"]
        except RagServeError as exc:
            degraded = True
            warnings.append(f"generator unavailable: {exc.message}")
            attempts = (exc.details or {}).get("attempts", [])
        except Exception as exc:  # a handle error mid-stream
            degraded = True
            warnings.append(f"generator unavailable: {_describe(exc)}")
        timings.generate_ms = round((time.perf_counter() - t) * 1000, 2)
        timings.total_ms = round((time.perf_counter() - start) * 1000, 2)
        if result is not None:
            backends.generator = result.backend
        yield "done", {
            "answer": result.text if result else "",
            "usage": (result.usage if result else Usage()).model_dump(),
            "cited": result.cited if result else [],
            "passages_used": result.passages_used if result else len(ranked),
            "degraded": degraded,
            "warnings": warnings,
            "timings": timings.model_dump(),
            "backends": backends.model_dump(),
            "generation": ([a.model_dump() for a in result.attempts] if result else attempts),
            "route": result.route if result else None,
        }

    # ------------------------------------------------------------------ embeddings

    async def embed(self, req: EmbeddingsRequest) -> EmbeddingsResponse:
        info = self.embedder_info
        if req.model is not None and info is not None and req.model != info.model:
            raise InvalidRequestError(
                f"model {req.model!r} is not served here; this service embeds with {info.model!r}")
        texts = req.texts()
        vectors = await self._call("embedder", self.embedder.embed(texts, req.input_type))
        return EmbeddingsResponse(
            data=[EmbeddingItem(index=i, embedding=v) for i, v in enumerate(vectors)],
            model=info.model if info else "",
        )

    # ------------------------------------------------------------------ documents

    async def ingest(self, req: IngestRequest) -> IngestResponse:
        s = self.settings
        if len(req.documents) > s.max_documents_per_request:
            raise PayloadTooLargeError(
                f"{len(req.documents)} documents in one request; the limit is "
                f"{s.max_documents_per_request}"
            )
        ids = [d.id for d in req.documents]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise InvalidRequestError(f"document ids repeat within the request: {dupes[:5]}")
        for doc in req.documents:
            if len(doc.text) > s.max_document_chars:
                raise PayloadTooLargeError(
                    f"document {doc.id!r} has {len(doc.text)} characters; the limit is "
                    f"{s.max_document_chars}"
                )
        # Everything is validated before anything is written: a bad request changes nothing.
        t0 = time.perf_counter()
        chunked = await asyncio.to_thread(
            lambda: [(d, chunk_document(d, self.chunker)) for d in req.documents]
        )
        t_chunk = time.perf_counter()
        # One read of the stored state and one write for the whole request: per-document
        # calls cost a full scan each in Qdrant local mode.
        stored = await self._call(
            "retriever", self.retriever.chunk_hashes_many([d.id for d, _ in chunked])
        )
        results: list[DocumentResult] = []
        changed: list[tuple] = []
        for doc, chunks in chunked:
            existing = stored.get(doc.id, {})
            new_hash = chunks[0].doc_hash if chunks else ""
            if set(existing) == {c.chunk_id for c in chunks} and all(
                h == new_hash for h in existing.values()
            ):
                results.append(DocumentResult(id=doc.id, status="unchanged", chunks=len(chunks)))
                continue
            status = "updated" if existing else "created"
            results.append(DocumentResult(id=doc.id, status=status, chunks=len(chunks)))
            changed.append((doc, chunks))
        texts = [c.text for _, chunks in changed for c in chunks]
        vectors = await self._embed_passages(texts) if texts else []
        updates, i = [], 0
        for doc, chunks in changed:
            updates.append((doc.id, chunks, vectors[i : i + len(chunks)]))
            i += len(chunks)
        if updates:
            await self._call("retriever", self.retriever.replace_documents(updates))
        embedded = len(texts)
        t_end = time.perf_counter()
        log.info("ingested %d documents, %d chunks embedded", len(results), embedded)
        return IngestResponse(
            documents=results,
            chunks_embedded=embedded,
            timings_ms={
                "chunk_ms": round((t_chunk - t0) * 1000, 2),
                "embed_and_store_ms": round((t_end - t_chunk) * 1000, 2),
            },
        )

    async def _embed_passages(self, texts: list[str]) -> list[list[float]]:
        size = self.settings.embed_batch_size
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        parts = await asyncio.gather(
            *(self._call("embedder", self.embedder.embed(b, "passage")) for b in batches)
        )
        return [v for part in parts for v in part]

    async def get_document(self, doc_id: str) -> DocumentChunks:
        chunks = await self._call("retriever", self.retriever.get_document(doc_id))
        if not chunks:
            raise NotFoundError(f"no document with id {doc_id!r}")
        first = chunks[0]
        return DocumentChunks(
            id=doc_id, content_type=first.content_type, metadata=first.metadata,
            doc_hash=first.doc_hash, chunks=chunks,
        )

    async def delete_document(self, doc_id: str) -> DeleteResponse:
        deleted = await self._call("retriever", self.retriever.delete_document(doc_id))
        if not deleted:
            raise NotFoundError(f"no document with id {doc_id!r}")
        return DeleteResponse(id=doc_id, deleted_chunks=deleted)


def _citation(number: int, chunk: ScoredChunk, cited: bool = False) -> Citation:
    return Citation(
        number=number, doc_id=chunk.doc_id, chunk_id=chunk.chunk_id, text=chunk.text,
        score=chunk.score, metadata=chunk.metadata, cited=cited,
    )


def _numbered(chunks: list[ScoredChunk], cited: list[int]) -> list[Citation]:
    marks = set(cited)
    return [_citation(i + 1, c, cited=(i + 1) in marks) for i, c in enumerate(chunks)]


def _describe(exc: BaseException) -> str:
    msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return msg.splitlines()[0][:300] if msg else type(exc).__name__
