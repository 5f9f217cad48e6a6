"""In-memory stand-ins for stage backends, shared by the tests.

Each fake passes the same contract tests as the real backends of its role
(``tests/contracts``), so a test that uses one exercises the behaviour callers rely on, not a
simplification of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import uuid
from array import array
from typing import AsyncIterator

from ragserve.config import RetrievalMode
from ragserve.errors import ConfigurationError, InvalidRequestError, StageUnavailableError
from ragserve.lexical import bm25_scores
from ragserve.schemas import (
    Chunk, EmbedderInfo, Filters, GenerationRequest, GenerationResult, InputKind, RerankResult,
    ScoredChunk, Usage,
)
from ragserve.security.access import Access

__all__ = ["MemoryRetriever", "FakeEmbedder", "FakeReranker", "FakeGenerator"]

_RRF_K = 60
_MISSING = object()
_CHUNK_FIELDS = frozenset({"doc_id", "content_type"})  # filter fields not in the metadata


class MemoryRetriever:
    """The ``Retriever`` role in a dict: usable as soon as it is built (``warm_up`` is a no-op
    until ``aclose``), and bound to the first embedder ``ensure_collection`` sees.

    ``dense`` ranks by cosine over the given vectors; ``sparse`` by ``ragserve.lexical``'s BM25
    over the stored texts (IDF over every stored chunk, then filtered; no stemming, unlike the
    Qdrant backend); ``hybrid`` by reciprocal-rank fusion of the two. ``replacements`` counts
    ``replace_documents`` calls that wrote something, for tests that check nothing was written.
    """

    name = "memory"

    def __init__(self, default_mode: RetrievalMode = "hybrid") -> None:
        self.default_mode = default_mode
        self.replacements = 0
        self._closed = False
        self._embedder: EmbedderInfo | None = None
        # (tenant, doc id) -> chunks: the same id in two tenants is two documents
        self._docs: dict[tuple[str, str], list[tuple[Chunk, list[float]]]] = {}

    async def warm_up(self) -> None:
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True

    def _check(self) -> None:
        if self._closed:
            raise StageUnavailableError("memory retriever is closed")
        if self._embedder is None:
            raise ConfigurationError("memory retriever: no collection (was ensure_collection run?)")

    async def ensure_collection(self, embedder: EmbedderInfo) -> None:
        if self._closed:
            raise StageUnavailableError("memory retriever is closed")
        if self._embedder is None:
            self._embedder = embedder
        elif (self._embedder.model, self._embedder.dimension) != (embedder.model, embedder.dimension):
            raise ConfigurationError(
                f"collection was built with {self._embedder.model!r} "
                f"(dimension {self._embedder.dimension}), not {embedder.model!r} "
                f"(dimension {embedder.dimension}): re-index the documents"
            )

    # ------------------------------------------------------------------ reads

    async def search(
        self,
        vector: list[float],
        top_k: int,
        filters: Filters | None = None,
        *,
        query_text: str | None = None,
        mode: str | None = None,
        access: Access | None = None,
    ) -> list[ScoredChunk]:
        self._check()
        access = access or Access()
        mode = mode or self.default_mode
        if not query_text:
            mode = "dense"
        stored = [(c, v) for chunks in self._docs.values() for c, v in chunks]
        keep = [i for i, (c, _) in enumerate(stored)
                if access.can_read(c.tenant, c.acl) and _matches(c, filters)]
        dense = sorted(((i, _cosine(vector, stored[i][1])) for i in keep), key=lambda p: -p[1])
        if mode == "dense":
            ranked = dense
        else:
            bm25 = bm25_scores(query_text or "", [c.text for c, _ in stored])
            sparse = sorted(((i, bm25[i]) for i in keep if bm25[i] > 0), key=lambda p: -p[1])
            ranked = sparse if mode == "sparse" else _rrf([dense, sparse])
        return [
            ScoredChunk(**stored[i][0].model_dump(), score=score, retrieval_score=score)
            for i, score in ranked[:top_k]
        ]

    async def chunk_hashes_many(self, doc_ids: list[str], *,
                                access: Access | None = None) -> dict[str, dict[str, str]]:
        self._check()
        tenant = (access or Access()).tenant
        return {d: {c.chunk_id: c.doc_hash for c, _ in self._docs.get((tenant, d), [])}
                for d in doc_ids}

    def _readable(self, doc_id: str, access: Access | None) -> list[Chunk]:
        access = access or Access()
        return [c for c, _ in self._docs.get((access.tenant, doc_id), [])
                if access.can_read(c.tenant, c.acl)]

    async def get_document(self, doc_id: str, *, access: Access | None = None) -> list[Chunk]:
        self._check()
        return sorted(self._readable(doc_id, access), key=lambda c: c.chunk_index)

    async def count(self) -> int:
        self._check()
        return sum(len(chunks) for chunks in self._docs.values())

    async def health(self) -> dict:
        if self._closed:
            raise StageUnavailableError("memory retriever is closed")
        return {"backend": self.name, "collection_exists": self._embedder is not None,
                "documents": len(self._docs),
                "points": sum(len(chunks) for chunks in self._docs.values())}

    # ------------------------------------------------------------------ writes

    async def replace_documents(
        self, documents: list[tuple[str, list[Chunk], list[list[float]]]], *,
        access: Access | None = None,
    ) -> None:
        self._check()
        tenant = (access or Access()).tenant
        for doc_id, chunks, vectors in documents:  # all checked before anything is written
            if len(chunks) != len(vectors):
                raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
            for c in chunks:
                if c.doc_id != doc_id:
                    raise ValueError(f"chunk {c.chunk_id} belongs to {c.doc_id!r}, not {doc_id!r}")
                if not _is_canonical_uuid(c.chunk_id):
                    raise ValueError(f"chunk_id {c.chunk_id!r} is not a canonical UUID string")
                if c.tenant != tenant:
                    raise ValueError(f"chunk {c.chunk_id} belongs to tenant {c.tenant!r}, "
                                     f"not {tenant!r}")
        if not documents:
            return
        for doc_id, chunks, vectors in documents:
            if chunks:
                self._docs[(tenant, doc_id)] = [(c.model_copy(deep=True), list(v))
                                                for c, v in zip(chunks, vectors)]
            else:
                self._docs.pop((tenant, doc_id), None)
        self.replacements += 1

    async def delete_document(self, doc_id: str, *, access: Access | None = None) -> int:
        self._check()
        if not self._readable(doc_id, access):
            return 0
        return len(self._docs.pop(((access or Access()).tenant, doc_id), []))


def _is_canonical_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except (ValueError, AttributeError, TypeError):
        return False


def _cosine(a: list[float], b: list[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b)) / norm if norm else 0.0


def _rrf(rankings: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (i, _) in enumerate(ranking):
            fused[i] = fused.get(i, 0.0) + 1.0 / (_RRF_K + rank + 1)
    return sorted(fused.items(), key=lambda p: -p[1])


def _same(stored: object, wanted: object) -> bool:
    # Booleans match only booleans (as in Qdrant), though Python has True == 1.
    if isinstance(stored, bool) != isinstance(wanted, bool):
        return False
    if isinstance(wanted, float) and wanted == int(wanted):
        wanted = int(wanted)
    return stored == wanted


def _matches(chunk: Chunk, filters: Filters | None) -> bool:
    """The ``Retriever.search`` filter rules: exact value or any of a list, every field ANDed;
    a stored list matches when one element does; a field the chunk lacks never matches."""
    for field, wanted in (filters or {}).items():
        if field in _CHUNK_FIELDS:
            stored = getattr(chunk, field)
            stored = getattr(stored, "value", stored)  # content_type is an enum
        else:
            stored = chunk.metadata.get(field, _MISSING)
        if stored is _MISSING:
            return False
        options = wanted if isinstance(wanted, list) else [wanted]
        values = stored if isinstance(stored, list) else [stored]
        if not any(_same(s, o) for s in values for o in options):
            return False
    return True


# --------------------------------------------------------------------------- embedder


class FakeEmbedder:
    """The ``Embedder`` role without a model. A text's vector is a hash of its first
    ``max_input_chars`` characters (longer texts are truncated, as a model's are), unit length
    and float32-exact (the precision a model and the embedding cache keep). Both kinds give
    the same vector, as a model without query/passage prefixes does. ``calls`` counts
    ``embed`` calls."""

    name = "fake"

    def __init__(self, dimension: int = 3, max_input_chars: int = 20_000) -> None:
        if not 1 <= dimension <= 32:
            raise ValueError("dimension must be in [1, 32] (one byte of a SHA-256 each)")
        self.dimension = dimension
        self.max_input_chars = max_input_chars
        self.calls = 0

    async def info(self) -> EmbedderInfo:
        return EmbedderInfo(model="fake", dimension=self.dimension, device="cpu", dtype="float32")

    async def embed(self, texts: list[str], kind: InputKind = "passage") -> list[list[float]]:
        self.calls += 1
        return [self._vector(t) for t in texts]

    def _vector(self, text: str) -> list[float]:
        digest = hashlib.sha256(text[: self.max_input_chars].encode()).digest()
        raw = [b - 127.5 for b in digest[: self.dimension]]  # never all zero
        norm = math.sqrt(sum(x * x for x in raw))
        return array("f", (x / norm for x in raw)).tolist()

    async def health(self) -> dict:
        return {"backend": self.name}


# --------------------------------------------------------------------------- reranker


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


class FakeReranker:
    """The ``Reranker`` role without a model: a chunk scores the share of the query's words it
    contains; best first, ties in the given order, ``retrieval_score`` kept (the old ``score``
    where the retriever left it unset). ``fail``: every call raises ``StageUnavailableError``;
    ``delay``: seconds before answering (or failing)."""

    name = "fake-reranker"

    def __init__(self, fail: bool = False, delay: float = 0.0) -> None:
        self.fail, self.delay = fail, delay

    async def rerank(self, query: str, chunks: list[ScoredChunk], top_n: int) -> RerankResult:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise StageUnavailableError("reranker replica died")
        terms = _words(query)
        scores = [len(terms & _words(c.text)) / max(len(terms), 1) for c in chunks]
        order = sorted(range(len(chunks)), key=lambda i: -scores[i])[: max(top_n, 0)]
        kept = [chunks[i].model_copy(update={
            "score": scores[i],
            "retrieval_score": (chunks[i].retrieval_score if chunks[i].retrieval_score is not None
                                else chunks[i].score),
        }) for i in order]
        return RerankResult(chunks=kept, backend=self.name)

    async def health(self) -> dict:
        return {"backend": self.name}


# --------------------------------------------------------------------------- generator


class FakeGenerator:
    """The ``Generator`` role without a model: answers ``"answer [1]"`` from the first passage
    (``passages_used`` 1, the rest dropped) or ``"no passages"`` without any, cut to
    ``max_tokens`` words; a token is a word, the prompt costs ``PROMPT_TOKENS``. A question of
    more than ``max_query_words`` words does not fit: ``InvalidRequestError``.

    ``fail``: ``generate`` raises ``StageUnavailableError``, and ``stream`` breaks after its
    first delta (a server that dies mid-answer)."""

    name = "fake-gen"
    PROMPT_TOKENS = 5

    def __init__(self, fail: bool = False, max_query_words: int = 1000) -> None:
        self.fail = fail
        self.max_query_words = max_query_words

    def _answer(self, req: GenerationRequest) -> GenerationResult:
        if len(req.query.split()) > self.max_query_words:
            raise InvalidRequestError(
                f"the question is longer than {self.max_query_words} words: it does not fit")
        used = min(1, len(req.passages))
        words = ["answer", "[1]"] if used else ["no", "passages"]
        if req.max_tokens is not None:
            words = words[: req.max_tokens]
        return GenerationResult(
            text=" ".join(words),
            usage=Usage(prompt_tokens=self.PROMPT_TOKENS, completion_tokens=len(words),
                        total_tokens=self.PROMPT_TOKENS + len(words)),
            backend=self.name, cited=[1] if "[1]" in words else [], passages_used=used,
            passages_dropped=len(req.passages) - used)

    async def generate(self, req: GenerationRequest) -> GenerationResult:
        if self.fail:
            raise StageUnavailableError("LLM server down")
        return self._answer(req)

    async def stream(self, req: GenerationRequest) -> AsyncIterator[dict]:
        result = self._answer(req)
        words = result.text.split(" ")
        for i, word in enumerate(words):
            yield {"delta": word if i == len(words) - 1 else word + " "}
            if self.fail:
                raise StageUnavailableError("LLM server down")
        yield {"result": result}

    async def health(self) -> dict:
        return {"backend": self.name}
