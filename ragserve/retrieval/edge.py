"""Qdrant Edge retriever backend: Qdrant's own engine in process (``qdrant-edge-py``).

Same points as ``QdrantRetriever`` (id = ``chunk_id``, dense vector ``"dense"`` (cosine),
sparse vector ``"lexical"`` with Qdrant's IDF, payload from ``payload.point_payload``) and the
same filters (``payload.scoped_filter`` builds them; ``_edge_filter`` translates them) and
the same lexical analysis (``LexicalEncoder``; its ``analyzer`` is recorded and checked), but
searched by Qdrant's Rust segment code: HNSW over the dense vectors (optionally int8-quantized)
and an inverted index over the sparse ones, so hybrid search needs no Python-side mirror.

One collection is one shard folder, ``<edge.path>/<collection>/shard``, beside a
``collection.json`` that records the embedding model, dimension and lexical analyzer (Edge
shards have no collection metadata of their own). The shard's write-ahead log is locked by the
one process that opens it: one retriever replica per folder, as in Qdrant local mode.

Calls into the shard run in worker threads (the engine releases the GIL while it searches);
writes are serialised by a lock. Edge builds HNSW only when its optimizers run: after each
write when ``edge.optimize_after_write`` is on, else when ``optimize()`` is called (bulk
loads: once at the end); points not indexed yet are searched exactly. Searches on the shard
wait while the optimizer builds an index (qdrant-edge-py 0.9.0).
Figures at 100k and 1M chunks: ``docs/benchmarks/retriever-scale.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import qdrant_edge as qe
from qdrant_client import models as qm

from ragserve.config import RetrievalMode, RetrieverConfig
from ragserve.errors import ConfigurationError, RagServeError, StageUnavailableError
from ragserve.retrieval.payload import (
    ANALYZER_KEY,
    SPARSE_NAME,
    VECTOR_NAME,
    analyzer_mismatch,
    canonical_uuid,
    chunk_fields,
    doc_filter,
    docs_condition,
    metadata_filter,
    payload_key,
    point_payload,
    scoped_filter,
)
from ragserve.retrieval.sparse import LexicalEncoder
from ragserve.schemas import Chunk, EmbedderInfo, Filters, ScoredChunk
from ragserve.security.access import Access

__all__ = ["EdgeRetriever", "SCHEMA_VERSION"]

log = logging.getLogger("ragserve.retriever")

SCHEMA_VERSION = 2  # the points of QdrantRetriever's schema 2 (dense + lexical)
_PAGE = 1024
_RRF_K = 2  # Qdrant's own default, so `fusion: rrf` ranks as it does on a Qdrant server
_T = TypeVar("_T")


class EdgeRetriever:
    """The ``Retriever`` role on an in-process Qdrant Edge shard.

    ``__init__`` only stores the config; ``warm_up()`` opens the shard if the collection
    exists, ``ensure_collection()`` creates it. Engine failures become ``StageUnavailableError``
    (a closed shard, an I/O error) or ``ConfigurationError`` (the folder locked by another
    process, a collection built with another embedder, reads before the collection exists);
    raw engine exceptions never escape.
    """

    def __init__(self, config: RetrieverConfig) -> None:
        self.config = config
        self.encoder = LexicalEncoder(config.lexical)
        self._open = False
        self._shard: qe.EdgeShard | None = None
        self._write_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return "qdrant-edge"

    @property
    def collection(self) -> str:
        return self.config.collection

    @property
    def _folder(self) -> Path:
        return Path(self.config.edge.path).expanduser() / self.collection

    @property
    def _meta_path(self) -> Path:
        return self._folder / "collection.json"

    @property
    def _shard_path(self) -> Path:
        return self._folder / "shard"

    # ------------------------------------------------------------------ lifecycle

    async def warm_up(self) -> None:
        if self._open:
            return
        self._folder.parent.mkdir(parents=True, exist_ok=True)
        meta = self._read_meta()
        if meta is not None and self._shard_path.exists():
            self._shard = await self._run("warm_up", self._load_shard, int(meta["dimension"]))
        self._open = True
        log.info("retriever %s opened %s", self.name, self._folder)

    async def aclose(self) -> None:
        shard, self._shard, self._open = self._shard, None, False
        if shard is not None:
            async with self._write_lock:  # a write in flight finishes first
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(shard.close)

    def _edge_config(self, dimension: int) -> qe.EdgeConfig:
        c = self.config.edge
        quantization = (qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99,
                                                    memory=qe.Memory.Pinned)
                        if c.quantization == "int8" else None)
        return qe.EdgeConfig(
            vectors={VECTOR_NAME: qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE_NAME: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            hnsw_config=qe.HnswIndexConfig(m=c.hnsw_m, ef_construct=c.hnsw_ef_construct,
                                           full_scan_threshold=c.full_scan_threshold_kb),
            quantization_config=quantization,
            max_search_threads=c.search_threads,
        )

    def _load_shard(self, dimension: int) -> qe.EdgeShard:
        try:
            return qe.EdgeShard.load(str(self._shard_path), self._edge_config(dimension))
        except Exception as e:
            if "WouldBlock" in str(e) or "lock" in str(e).lower():
                raise ConfigurationError(
                    f"Qdrant Edge folder {self._shard_path} is already open in another process "
                    f"({e}). An Edge shard serves one process: run one retriever replica, or "
                    "use a Qdrant server (retriever.backend: qdrant, url: ...).") from e
            raise

    def _read_meta(self) -> dict[str, Any] | None:
        try:
            return json.loads(self._meta_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise ConfigurationError(f"{self._meta_path} is unreadable ({e}): delete the "
                                     f"folder {self._folder} and re-index") from e

    def _write_meta(self, meta: dict[str, Any]) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        tmp = self._meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, self._meta_path)

    @property
    def shard(self) -> qe.EdgeShard:
        if not self._open:
            raise StageUnavailableError("retriever not warmed up or closed (call warm_up first)")
        if self._shard is None:
            raise ConfigurationError(
                f"qdrant-edge collection {self.collection!r} does not exist "
                "(was ensure_collection run?)")
        return self._shard

    # ------------------------------------------------------------------ collection

    async def ensure_collection(self, embedder: EmbedderInfo) -> None:
        if not self._open:
            raise StageUnavailableError("retriever not warmed up or closed (call warm_up first)")
        async with self._write_lock:
            meta = self._read_meta()
            if meta is None:
                meta = {"embedder_model": embedder.model, "dimension": embedder.dimension,
                        "distance": "cosine", "schema": SCHEMA_VERSION,
                        ANALYZER_KEY: self.encoder.analyzer}
                self._write_meta(meta)
                log.info("created collection %r for %s (dim %d)",
                         self.collection, embedder.model, embedder.dimension)
            self._check_meta(meta, embedder)
            if self._shard is None:
                self._shard = await self._run("ensure_collection", self._open_or_create,
                                              embedder.dimension)

    def _open_or_create(self, dimension: int) -> qe.EdgeShard:
        if self._shard_path.exists():
            shard = self._load_shard(dimension)
        else:
            shard = qe.EdgeShard.create(str(self._shard_path), self._edge_config(dimension))
        # Keyword indexes on what every query filters by; re-creating one is a no-op.
        have = set(shard.info().payload_schema)
        wanted = dict.fromkeys(["doc_id", "tenant", "acl",
                                *map(payload_key, self.config.filterable_fields)])
        for field in wanted:
            if field not in have:
                shard.update(qe.UpdateOperation.create_field_index(
                    field, qe.PayloadSchemaType.Keyword))
        return shard

    def _check_meta(self, meta: dict[str, Any], embedder: EmbedderInfo) -> None:
        stored_model, stored_dim = meta.get("embedder_model"), meta.get("dimension")
        if stored_model == embedder.model and stored_dim == embedder.dimension:
            if error := analyzer_mismatch(self.collection, meta, self.encoder.analyzer):
                raise error
            return
        raise ConfigurationError(
            f"collection {self.collection!r} ({self._folder}) was built with embedder "
            f"{stored_model!r} (dimension {stored_dim}), but the configured embedder is "
            f"{embedder.model!r} (dimension {embedder.dimension}). Mixing vectors from two "
            "models corrupts search: set retriever.collection to another name, or delete the "
            "folder and re-index the documents with the configured embedder.",
            details={"collection": self.collection, "stored_model": stored_model,
                     "stored_dimension": stored_dim, "configured_model": embedder.model,
                     "configured_dimension": embedder.dimension})

    async def optimize(self) -> bool:
        """Run the shard's optimizers until none is planned (merge segments, build HNSW).
        Returns whether anything changed. For bulk loads with ``optimize_after_write`` off."""
        async with self._write_lock:
            return await self._run("optimize", self.shard.optimize)

    # ------------------------------------------------------------------ reads

    async def search(
        self,
        vector: list[float],
        top_k: int,
        filters: Filters | None = None,
        *,
        query_text: str | None = None,
        mode: RetrievalMode | None = None,
        access: Access | None = None,
    ) -> list[ScoredChunk]:
        """Top-k chunks. ``dense`` ranks by cosine (HNSW, ``edge.hnsw_ef``); ``sparse`` by BM25
        over ``query_text``; ``hybrid`` prefetches ``config.prefetch_depth(top_k)`` from each
        and fuses them (``config.fusion``). ``access`` is ANDed with ``filters`` in every stage."""
        shard = self.shard
        access = access or Access()
        mode = mode or self.config.default_mode
        if not query_text:
            mode = "dense"
        query_filter = _edge_filter(scoped_filter(metadata_filter(filters), access))
        request = self._request(vector, top_k, query_text or "", mode, query_filter)
        points = await self._run("search", shard.query, request)
        # The engine orders tied scores (frequent under DBSF) arbitrarily: break ties by id, over
        # the whole fused candidate set, so the same query always returns the same list.
        points = sorted(points, key=lambda p: (-p.score, str(p.id)))[:top_k]
        return [ScoredChunk(**chunk_fields(p.id, p.payload), score=p.score,
                            retrieval_score=p.score) for p in points]

    def _search_params(self) -> qe.SearchParams:
        c = self.config.edge
        quantization = (qe.QuantizationSearchParams(rescore=True, oversampling=c.oversampling)
                        if c.quantization == "int8" else None)
        return qe.SearchParams(hnsw_ef=c.hnsw_ef, quantization=quantization)

    def _request(self, vector: list[float], top_k: int, query_text: str, mode: str,
                 query_filter: qe.Filter | None) -> qe.QueryRequest:
        dense = qe.Query.Nearest(list(vector), using=VECTOR_NAME)
        if mode == "dense":
            return qe.QueryRequest(limit=top_k, query=dense, filter=query_filter,
                                   params=self._search_params(), with_payload=True)
        indices, values = self.encoder.query(query_text)
        sparse = qe.Query.Nearest(qe.SparseVector(indices, values), using=SPARSE_NAME)
        if mode == "sparse":
            return qe.QueryRequest(limit=top_k, query=sparse, filter=query_filter,
                                   with_payload=True)
        depth = self.config.prefetch_depth(top_k)
        fusion = qe.Fusion.Rrf(k=_RRF_K) if self.config.fusion == "rrf" else qe.Fusion.Dbsf()
        return qe.QueryRequest(
            limit=depth, query=fusion, filter=query_filter, with_payload=True,
            prefetches=[
                qe.Prefetch(limit=depth, query=dense, filter=query_filter,
                            params=self._search_params()),
                qe.Prefetch(limit=depth, query=sparse, filter=query_filter),
            ])

    async def chunk_hashes_many(self, doc_ids: list[str], *,
                                access: Access | None = None) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {d: {} for d in doc_ids}
        if not doc_ids:
            return out
        selector = scoped_filter(qm.Filter(must=[docs_condition(doc_ids)]), access or Access(),
                                 with_acl=False)
        for r in await self._scroll(selector, ["doc_hash", "doc_id"], "chunk_hashes"):
            payload = r.payload or {}
            out.setdefault(payload.get("doc_id", ""), {})[str(r.id)] = payload.get("doc_hash", "")
        return out

    async def get_document(self, doc_id: str, *, access: Access | None = None) -> list[Chunk]:
        records = await self._scroll(scoped_filter(doc_filter(doc_id), access or Access()),
                                     True, "get_document")
        return sorted((Chunk(**chunk_fields(r.id, r.payload)) for r in records),
                      key=lambda c: c.chunk_index)

    async def _scroll(self, selector: qm.Filter | None, with_payload: bool | list[str],
                      op: str) -> list[Any]:
        shard, edge_filter = self.shard, _edge_filter(selector)

        def scroll_all() -> list[Any]:
            records, offset = [], None
            while True:
                page, offset = shard.scroll(qe.ScrollRequest(
                    offset=offset, limit=_PAGE, filter=edge_filter, with_payload=with_payload,
                    with_vector=False))
                records.extend(page)
                if offset is None:
                    return records

        return await self._run(op, scroll_all)

    async def count(self) -> int:
        shard = self.shard
        return await self._run("count", shard.count, qe.CountRequest(exact=True))

    async def health(self) -> dict:
        """Shard state. Raises ``StageUnavailableError`` only when the retriever is closed:
        a collection not created yet is a state, not a fault."""
        if not self._open:
            raise StageUnavailableError("retriever not warmed up or closed")
        out: dict[str, Any] = {"backend": self.name, "collection": self.collection,
                               "collection_exists": self._shard is not None, "points": 0,
                               "path": str(self._folder)}
        if self._shard is not None:
            info = await self._run("health", self._shard.info)
            out.update(points=info.points_count, segments=info.segments_count)
        return out

    # ------------------------------------------------------------------ writes

    async def replace_documents(
        self, documents: list[tuple[str, list[Chunk], list[list[float]]]], *,
        access: Access | None = None,
    ) -> None:
        """Make each document's ``chunks`` its only chunks: upsert the new points, then delete
        the documents' points whose ids are not among them (one engine operation each, in
        that order, under the write lock).

        Readers never see a document missing; between the two operations a concurrent search
        may see old and new chunks together for a moment (as with a Qdrant server).
        Re-sending identical chunks rewrites the same ids (idempotent)."""
        if not documents:
            return
        shard = self.shard
        access = access or Access()
        doc_ids, points, new_ids = [], [], []
        for doc_id, chunks, vectors in documents:
            if len(chunks) != len(vectors):
                raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
            for c, v in zip(chunks, vectors):
                if c.doc_id != doc_id:
                    raise ValueError(f"chunk {c.chunk_id} belongs to {c.doc_id!r}, not {doc_id!r}")
                if c.tenant != access.tenant:
                    raise ValueError(f"chunk {c.chunk_id} belongs to tenant {c.tenant!r}, "
                                     f"not {access.tenant!r}")
                if canonical_uuid(c.chunk_id) != c.chunk_id:
                    raise ValueError(f"chunk_id {c.chunk_id!r} is not a canonical UUID string")
                vector: dict[str, Any] = {VECTOR_NAME: list(v)}
                idx, val = self.encoder.document(c.text)
                if idx:
                    vector[SPARSE_NAME] = qe.SparseVector(idx, val)
                points.append(qe.Point(c.chunk_id, vector, point_payload(c)))
                new_ids.append(c.chunk_id)
            doc_ids.append(doc_id)
        stale = _edge_filter(scoped_filter(qm.Filter(
            must=[docs_condition(doc_ids)],
            must_not=[qm.HasIdCondition(has_id=new_ids)] if new_ids else None,
        ), access, with_acl=False))

        def apply() -> None:
            if points:
                shard.update(qe.UpdateOperation.upsert_points(points))
            shard.update(qe.UpdateOperation.delete_points_by_filter(stale))
            if self.config.edge.optimize_after_write:
                shard.optimize()  # a no-op unless a segment outgrew the indexing threshold

        async with self._write_lock:
            await self._run("replace_documents", apply)

    async def delete_document(self, doc_id: str, *, access: Access | None = None) -> int:
        """Delete every chunk of the document that ``access`` can see; returns the count
        taken just before deleting."""
        shard = self.shard
        selector = _edge_filter(scoped_filter(doc_filter(doc_id), access or Access()))

        def apply() -> int:
            n = shard.count(qe.CountRequest(exact=True, filter=selector))
            if n:
                shard.update(qe.UpdateOperation.delete_points_by_filter(selector))
            return n

        async with self._write_lock:
            return await self._run("delete_document", apply)

    # ------------------------------------------------------------------ errors

    async def _run(self, op: str, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` in a worker thread, engine errors mapped to the ragserve hierarchy."""
        with self._errors(op):
            return await asyncio.to_thread(functools.partial(fn, *args))

    @contextlib.contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        where = f"qdrant-edge (collection {self.collection!r}) {op}"
        try:
            yield
        except (RagServeError, ValueError, TypeError):
            raise
        except Exception as e:  # the engine raises plain Exception with a message
            if "not initialized" in str(e) or not self._open:  # closed under us
                raise StageUnavailableError(f"{where}: shard is closed") from e
            raise StageUnavailableError(f"{where} failed: {e}", details={"operation": op}) from e


# --------------------------------------------------------------------- filters

def _edge_filter(f: qm.Filter | None) -> qe.Filter | None:
    """A qdrant-client filter (as ``payload`` builds them) as the engine's own filter type:
    the one definition of what filters and access mean serves both backends."""
    if f is None:
        return None
    return qe.Filter(must=_conditions(f.must), should=_conditions(f.should),
                     must_not=_conditions(f.must_not))


def _conditions(conditions: Any) -> list[Any] | None:
    if conditions is None:
        return None
    if not isinstance(conditions, list):
        conditions = [conditions]
    return [_condition(c) for c in conditions]


def _condition(c: Any) -> Any:
    if isinstance(c, qm.Filter):
        return _edge_filter(c)
    if isinstance(c, qm.FieldCondition):
        if isinstance(c.match, qm.MatchValue):
            return qe.FieldCondition(key=c.key, match=qe.MatchValue(_value(c.match.value)))
        if isinstance(c.match, qm.MatchAny):
            return qe.FieldCondition(key=c.key, match=qe.MatchAny(list(c.match.any)))
    if isinstance(c, qm.IsEmptyCondition):
        return qe.IsEmptyCondition(key=c.is_empty.key)
    if isinstance(c, qm.HasIdCondition):
        return qe.HasIdCondition(set(map(str, c.has_id)))
    raise TypeError(f"no qdrant-edge equivalent for filter condition {c!r}")


def _value(value: Any) -> Any:
    # qdrant-edge-py 0.9.0 reads a Python bool as the integer 1 or 0 (bool is an int), which
    # then matches only integers; numpy's bool is no int, so it arrives as a JSON boolean.
    return np.bool_(value) if isinstance(value, bool) else value
