"""Qdrant retriever backend: embedded local mode (a folder on disk) or a Qdrant server.

One point per chunk: id = ``chunk_id`` (a canonical UUID string), one named dense vector
``"dense"`` (cosine), payload = the chunk's fields. The collection's ``metadata`` records the
embedding model and dimension so a replica started with another embedder refuses to serve.

Local mode is for development and small corpora: qdrant-client runs every call synchronously on
the event loop (an exact brute-force search), and the folder is locked by the one client that
opened it, so only one process (one retriever replica) can use it. Use a server beyond that.
Its sparse scoring is a Python scan of every point, so in local mode the retriever answers the
lexical side from an in-process inverted index that mirrors every write (``SparseIndex``, same
scores) and fuses it with Qdrant's dense results the way Qdrant would.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from qdrant_client.hybrid.fusion import distribution_based_score_fusion, reciprocal_rank_fusion

from ragserve.config import RetrievalMode, RetrieverConfig
from ragserve.errors import (
    ConfigurationError,
    RagServeError,
    StageTimeoutError,
    StageUnavailableError,
)
from ragserve.retrieval.sparse import LexicalEncoder
from ragserve.retrieval.sparse_index import SparseIndex
from ragserve.schemas import Chunk, EmbedderInfo, Filters, ScoredChunk

__all__ = ["QdrantRetriever", "VECTOR_NAME", "SCHEMA_VERSION"]

log = logging.getLogger("ragserve.retriever")

VECTOR_NAME = "dense"
SPARSE_NAME = "lexical"
SCHEMA_VERSION = 2  # 2: a sparse "lexical" vector beside the dense one
_PAGE = 256


class QdrantRetriever:
    """The ``Retriever`` role on Qdrant.

    ``__init__`` only stores the config; ``warm_up()`` opens the client. Every method raises
    ``StageUnavailableError`` / ``StageTimeoutError`` when Qdrant cannot answer (retryable), and
    ``ConfigurationError`` for what retrying cannot fix (wrong API key, missing or mismatched
    collection); raw client exceptions never escape. The timeout is owned by the HTTP client
    (``config.timeout_s`` per request, rounded up to whole seconds by qdrant-client).
    """

    def __init__(self, config: RetrieverConfig) -> None:
        self.config = config
        self.encoder = LexicalEncoder(config.lexical)
        self._client: AsyncQdrantClient | None = None
        self._has_sparse = True  # set from the collection by ensure_collection
        self._sparse_index: SparseIndex | None = None  # local mode: built by ensure_collection

    @property
    def name(self) -> str:
        return "qdrant-local" if self.config.local else "qdrant-server"

    @property
    def collection(self) -> str:
        return self.config.collection

    async def warm_up(self) -> None:
        if self._client is not None:
            return
        if self.config.local:
            path = Path(self.config.path or ".ragserve/qdrant").expanduser()
            path.mkdir(parents=True, exist_ok=True)
            try:
                # Built on the event loop's thread: local mode keeps SQLite connections that
                # must stay on the thread that opened them.
                self._client = AsyncQdrantClient(path=str(path))
            except RuntimeError as e:
                raise ConfigurationError(
                    f"Qdrant local folder {path} is already open in another client ({e}). "
                    "Embedded mode serves one process: run one retriever replica, or set "
                    "`url` to a Qdrant server."
                ) from e
        else:
            api_key = self.config.api_key.get_secret_value() if self.config.api_key else None
            # No background version probe: it warns from a thread at start-up whenever the
            # server is briefly unreachable; health() and ensure_collection() report that.
            self._client = AsyncQdrantClient(
                url=self.config.url,
                api_key=api_key,
                timeout=self.config.timeout_s,
                check_compatibility=False,
            )
        log.info("retriever %s opened collection %r", self.name, self.collection)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    @property
    def client(self) -> AsyncQdrantClient:
        if self._client is None:
            raise StageUnavailableError("retriever not warmed up (call warm_up first)")
        return self._client

    # ------------------------------------------------------------------ collection

    async def ensure_collection(self, embedder: EmbedderInfo) -> None:
        with self._errors("ensure_collection"):
            exists = await self.client.collection_exists(self.collection)
            if not exists:
                try:
                    await self.client.create_collection(
                        self.collection,
                        vectors_config={
                            VECTOR_NAME: qm.VectorParams(
                                size=embedder.dimension, distance=qm.Distance.COSINE
                            )
                        },
                        sparse_vectors_config={
                            SPARSE_NAME: qm.SparseVectorParams(modifier=qm.Modifier.IDF)
                        },
                        metadata={
                            "embedder_model": embedder.model,
                            "dimension": embedder.dimension,
                            "schema": SCHEMA_VERSION,
                        },
                    )
                    log.info(
                        "created collection %r for %s (dim %d)",
                        self.collection, embedder.model, embedder.dimension,
                    )
                except UnexpectedResponse as e:
                    if e.status_code != 409:  # 409: another replica created it first
                        raise
            await self._check_collection(embedder)
            await self._ensure_indexes()
            info = await self.client.get_collection(self.collection)
            self._has_sparse = SPARSE_NAME in (info.config.params.sparse_vectors or {})
            if not self._has_sparse:
                log.warning("collection %r has no lexical vectors (built before hybrid search): "
                            "sparse and hybrid queries use dense retrieval until it is re-indexed",
                            self.collection)
            elif self.config.local and self.config.local_sparse_index and self._sparse_index is None:
                # Once per process: this replica is the folder's only writer, so the mirror
                # stays in step after that (every ingress replica calls ensure_collection).
                self._sparse_index = await self._load_sparse_index()

    async def _load_sparse_index(self) -> SparseIndex:
        index = SparseIndex()
        docs: dict[str, list[tuple[str, list[int], list[float]]]] = {}
        offset = None
        while True:
            points, offset = await self.client.scroll(
                self.collection, limit=_PAGE, offset=offset, with_payload=["doc_id"],
                with_vectors=[SPARSE_NAME],
            )
            for p in points:
                sparse = (p.vector or {}).get(SPARSE_NAME) if isinstance(p.vector, dict) else None
                if sparse is not None and p.payload:
                    docs.setdefault(p.payload["doc_id"], []).append(
                        (str(p.id), list(sparse.indices), list(sparse.values)))
            if offset is None:
                break
        for doc_id, points in docs.items():
            index.replace_document(doc_id, points)
        log.info("lexical index of %r: %d points in memory", self.collection, len(index))
        return index

    async def _check_collection(self, embedder: EmbedderInfo) -> None:
        info = await self.client.get_collection(self.collection)
        meta = info.config.metadata or {}
        vectors = info.config.params.vectors
        params = vectors.get(VECTOR_NAME) if isinstance(vectors, dict) else None
        stored_model = meta.get("embedder_model")
        stored_dim = params.size if params is not None else meta.get("dimension")
        if (
            stored_model == embedder.model
            and stored_dim == embedder.dimension
            and params is not None
            and params.distance == qm.Distance.COSINE
        ):
            return
        raise ConfigurationError(
            f"collection {self.collection!r} was built with embedder {stored_model!r} "
            f"(dimension {stored_dim}, vector {VECTOR_NAME!r} "
            f"{'present' if params is not None else 'missing'}), but the configured embedder is "
            f"{embedder.model!r} (dimension {embedder.dimension}). Mixing vectors from two "
            "models corrupts search: set retriever.collection to another name, or delete the "
            "collection and re-index the documents with the configured embedder.",
            details={
                "collection": self.collection,
                "stored_model": stored_model,
                "stored_dimension": stored_dim,
                "configured_model": embedder.model,
                "configured_dimension": embedder.dimension,
            },
        )

    async def _ensure_indexes(self) -> None:
        # Local mode ignores payload indexes (and warns about them), so only a server gets them.
        if self.config.local:
            return
        info = await self.client.get_collection(self.collection)
        have = set(info.payload_schema or {})
        wanted = list(dict.fromkeys(["doc_id", *map(_payload_key, self.config.filterable_fields)]))
        for field in wanted:
            if field not in have:
                await self.client.create_payload_index(
                    self.collection, field, field_schema=qm.PayloadSchemaType.KEYWORD
                )

    # ------------------------------------------------------------------ reads

    async def search(
        self,
        vector: list[float],
        top_k: int,
        filters: Filters | None = None,
        *,
        query_text: str | None = None,
        mode: RetrievalMode | None = None,
    ) -> list[ScoredChunk]:
        """Top-k chunks. ``dense`` ranks by cosine; ``sparse`` by BM25 over ``query_text``;
        ``hybrid`` prefetches both and fuses them in Qdrant (``config.fusion``). Without
        ``query_text`` or lexical vectors in the collection, every mode is dense."""
        mode = mode or self.config.default_mode
        if not query_text or not self._has_sparse:
            mode = "dense"
        search_params = None
        if self.config.hnsw_ef and not self.config.local:
            search_params = qm.SearchParams(hnsw_ef=self.config.hnsw_ef)
        query_filter = _metadata_filter(filters)
        if mode != "dense" and self._sparse_index is not None and query_filter is None:
            return await self._search_indexed(vector, top_k, query_text or "", mode)
        kwargs: dict[str, Any] = {}
        if mode == "dense":
            kwargs = {"query": vector, "using": VECTOR_NAME}
        else:
            indices, values = self.encoder.query(query_text or "")
            sparse = qm.SparseVector(indices=indices, values=values)
            if mode == "sparse":
                kwargs = {"query": sparse, "using": SPARSE_NAME}
            else:
                depth = top_k * self.config.prefetch_factor
                fusion = qm.Fusion.RRF if self.config.fusion == "rrf" else qm.Fusion.DBSF
                kwargs = {
                    "prefetch": [
                        qm.Prefetch(query=vector, using=VECTOR_NAME, limit=depth,
                                    filter=query_filter, params=search_params),
                        qm.Prefetch(query=sparse, using=SPARSE_NAME, limit=depth,
                                    filter=query_filter),
                    ],
                    "query": qm.FusionQuery(fusion=fusion),
                }
        with self._errors("search"):
            result = await self.client.query_points(
                self.collection,
                limit=top_k,
                query_filter=query_filter,
                search_params=search_params if mode == "dense" else None,
                with_payload=True,
                with_vectors=False,
                **kwargs,
            )
        return [
            ScoredChunk(**_chunk_fields(p.id, p.payload), score=p.score, retrieval_score=p.score)
            for p in result.points
        ]

    async def _search_indexed(self, vector: list[float], top_k: int, query_text: str,
                              mode: RetrievalMode) -> list[ScoredChunk]:
        """Local mode's sparse and hybrid search: the lexical side from ``SparseIndex``, the
        dense side and the payloads from Qdrant, fused with qdrant-client's own functions (the
        ones local mode applies to prefetches). Filtered queries take Qdrant's path."""
        assert self._sparse_index is not None
        indices, values = self.encoder.query(query_text)
        depth = top_k * self.config.prefetch_factor if mode == "hybrid" else top_k
        lexical = [qm.ScoredPoint(id=pid, version=0, score=score)
                   for pid, score in self._sparse_index.search(indices, values, depth)]
        with self._errors("search"):
            if mode == "sparse":
                ranked = lexical[:top_k]
            else:
                dense = (await self.client.query_points(
                    self.collection, query=vector, using=VECTOR_NAME, limit=depth,
                    with_payload=False, with_vectors=False,
                )).points
                sources = [dense, lexical]
                ranked = (reciprocal_rank_fusion(sources, limit=top_k) if self.config.fusion == "rrf"
                          else distribution_based_score_fusion(sources, limit=top_k))
            records = await self.client.retrieve(
                self.collection, ids=[p.id for p in ranked], with_payload=True, with_vectors=False)
        payloads = {str(r.id): r.payload for r in records}
        return [
            ScoredChunk(**_chunk_fields(p.id, payloads[str(p.id)]), score=p.score, retrieval_score=p.score)
            for p in ranked if str(p.id) in payloads
        ]

    async def chunk_hashes(self, doc_id: str) -> dict[str, str]:
        """``chunk_hashes_many`` for one document."""
        return (await self.chunk_hashes_many([doc_id]))[doc_id]

    async def chunk_hashes_many(self, doc_ids: list[str]) -> dict[str, dict[str, str]]:
        """doc id -> {chunk id -> doc hash} for every given document, in one scan."""
        out: dict[str, dict[str, str]] = {d: {} for d in doc_ids}
        if not doc_ids:
            return out
        records = await self._scroll(qm.Filter(must=[_docs_condition(doc_ids)]),
                                     with_payload=["doc_hash", "doc_id"], op="chunk_hashes")
        for r in records:
            payload = r.payload or {}
            out.setdefault(payload.get("doc_id", ""), {})[str(r.id)] = payload.get("doc_hash", "")
        return out

    async def get_document(self, doc_id: str) -> list[Chunk]:
        records = await self._scroll_document(doc_id, with_payload=True, op="get_document")
        chunks = [Chunk(**_chunk_fields(r.id, r.payload)) for r in records]
        return sorted(chunks, key=lambda c: c.chunk_index)

    async def _scroll_document(self, doc_id: str, *, with_payload: bool | list[str], op: str) -> list[Any]:
        return await self._scroll(_doc_filter(doc_id), with_payload=with_payload, op=op)

    async def _scroll(self, scroll_filter: qm.Filter, *, with_payload: bool | list[str], op: str) -> list[Any]:
        records: list[Any] = []
        offset = None
        with self._errors(op):
            while True:
                page, offset = await self.client.scroll(
                    self.collection,
                    scroll_filter=scroll_filter,
                    limit=_PAGE,
                    offset=offset,
                    with_payload=with_payload,
                    with_vectors=False,
                )
                records.extend(page)
                if offset is None:
                    return records

    async def count(self) -> int:
        with self._errors("count"):
            return (await self.client.count(self.collection, exact=True)).count

    async def health(self) -> dict:
        """Connectivity and collection state. Raises ``StageUnavailableError`` only when
        Qdrant does not answer: a collection not created yet (before the ingress has run
        ``ensure_collection``) is a state, not a fault."""
        with self._errors("health"):
            exists = await self.client.collection_exists(self.collection)
            points = (await self.client.count(self.collection, exact=False)).count if exists else 0
        return {"backend": self.name, "collection": self.collection, "collection_exists": exists,
                "points": points}

    # ------------------------------------------------------------------ writes

    async def replace_document(
        self, doc_id: str, chunks: list[Chunk], vectors: list[list[float]]
    ) -> None:
        """``replace_documents`` for one document."""
        await self.replace_documents([(doc_id, chunks, vectors)])

    async def replace_documents(
        self, documents: list[tuple[str, list[Chunk], list[list[float]]]]
    ) -> None:
        """Make each document's ``chunks`` its only chunks, all in ONE ``batch_update_points``
        request: upsert the new points, then delete the documents' points whose ids are not
        among them.

        Readers never see a document missing. Local mode applies the request without
        yielding to the event loop, so no reader interleaves; a server applies the operations
        in order, so a concurrent search may at worst see old and new chunks together for a
        moment, never neither. Re-sending identical chunks rewrites the same ids (idempotent).
        One request for a whole batch matters in local mode, where a delete by filter scans
        every point: per-document deletes made ingestion quadratic in the corpus size.
        """
        if not documents:
            return
        doc_ids, points, new_ids = [], [], []
        lexical: dict[str, list[tuple[str, list[int], list[float]]]] = {}
        for doc_id, chunks, vectors in documents:
            if len(chunks) != len(vectors):
                raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
            for c, v in zip(chunks, vectors):
                if c.doc_id != doc_id:
                    raise ValueError(f"chunk {c.chunk_id} belongs to {c.doc_id!r}, not {doc_id!r}")
                if _canonical_uuid(c.chunk_id) != c.chunk_id:
                    raise ValueError(f"chunk_id {c.chunk_id!r} is not a canonical UUID string")
                vector: dict[str, Any] = {VECTOR_NAME: list(v)}
                if self._has_sparse:
                    idx, val = self.encoder.document(c.text)
                    if idx:
                        vector[SPARSE_NAME] = qm.SparseVector(indices=idx, values=val)
                    lexical.setdefault(doc_id, []).append((c.chunk_id, idx, val))
                points.append(qm.PointStruct(id=c.chunk_id, vector=vector, payload=_payload(c)))
                new_ids.append(c.chunk_id)
            doc_ids.append(doc_id)
        stale = qm.Filter(
            must=[_docs_condition(doc_ids)],
            must_not=[qm.HasIdCondition(has_id=new_ids)] if new_ids else None,
        )
        operations: list[Any] = []
        if points:
            operations.append(qm.UpsertOperation(upsert=qm.PointsList(points=points)))
        operations.append(qm.DeleteOperation(delete=qm.FilterSelector(filter=stale)))
        with self._errors("replace_documents"):
            await self.client.batch_update_points(self.collection, operations, wait=True)
        if self._sparse_index is not None:  # only after Qdrant applied it
            for doc_id in doc_ids:
                self._sparse_index.replace_document(doc_id, lexical.get(doc_id, []))

    async def delete_document(self, doc_id: str) -> int:
        """Delete every chunk of the document; returns the count taken just before deleting."""
        with self._errors("delete_document"):
            n = (
                await self.client.count(
                    self.collection, count_filter=_doc_filter(doc_id), exact=True
                )
            ).count
            if n:
                await self.client.delete(
                    self.collection,
                    points_selector=qm.FilterSelector(filter=_doc_filter(doc_id)),
                    wait=True,
                )
        if self._sparse_index is not None:
            self._sparse_index.delete_document(doc_id)
        return n

    # ------------------------------------------------------------------ errors

    @contextlib.contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        """Turn client and transport failures into the ragserve error hierarchy."""
        where = f"qdrant ({self.name}, collection {self.collection!r}) {op}"
        try:
            yield
        except RagServeError:
            raise
        except UnexpectedResponse as e:
            status = e.status_code
            details = {"status": status, "operation": op}
            if status in (401, 403):
                raise ConfigurationError(
                    f"{where}: rejected the API key ({status})", details=details
                ) from e
            if status == 404:
                raise ConfigurationError(
                    f"{where}: not found (was ensure_collection run?)", details=details
                ) from e
            if status is None or status in (408, 429) or status >= 500:
                raise StageUnavailableError(
                    f"{where}: server answered {status}", details=details
                ) from e
            raise RagServeError(f"{where} failed: {e}", details=details) from e
        except ResponseHandlingException as e:
            raise _transport_error(where, e.source) from e
        except (httpx.TransportError, TimeoutError, ConnectionError) as e:
            raise _transport_error(where, e) from e
        except RuntimeError as e:
            if "closed" in str(e).lower():  # local mode after close()
                raise StageUnavailableError(f"{where}: client is closed") from e
            raise
        except ValueError as e:
            if self.config.local and "not found" in str(e):  # local mode's missing collection
                raise ConfigurationError(f"{where}: {e} (was ensure_collection run?)") from e
            raise


def _transport_error(where: str, source: BaseException) -> StageUnavailableError:
    if isinstance(source, (httpx.TimeoutException, TimeoutError)):
        return StageTimeoutError(f"{where}: timed out ({type(source).__name__})")
    return StageUnavailableError(
        f"{where}: cannot reach Qdrant ({type(source).__name__}: {source})"
    )


# ---------------------------------------------------------------------- payload and filters


def _canonical_uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


def _payload(chunk: Chunk) -> dict[str, Any]:
    return {
        "doc_id": chunk.doc_id,
        "chunk_index": chunk.chunk_index,
        "text": chunk.text,
        "content_type": chunk.content_type.value,
        "metadata": chunk.metadata,
        "doc_hash": chunk.doc_hash,
    }


def _chunk_fields(point_id: Any, payload: dict[str, Any] | None) -> dict[str, Any]:
    payload = payload or {}
    return {
        "chunk_id": str(point_id),
        "doc_id": payload.get("doc_id", ""),
        "chunk_index": payload.get("chunk_index", 0),
        "text": payload.get("text", ""),
        "content_type": payload.get("content_type", "general"),
        "metadata": payload.get("metadata") or {},
        "doc_hash": payload.get("doc_hash", ""),
    }


def _doc_condition(doc_id: str) -> qm.FieldCondition:
    return qm.FieldCondition(key="doc_id", match=qm.MatchValue(value=doc_id))


def _docs_condition(doc_ids: list[str]) -> qm.FieldCondition:
    return qm.FieldCondition(key="doc_id", match=qm.MatchAny(any=list(doc_ids)))


def _doc_filter(doc_id: str) -> qm.Filter:
    return qm.Filter(must=[_doc_condition(doc_id)])


def _match_value(value: Any) -> Any:
    # Filters allow whole-number floats (validate_filters); Qdrant matches ints.
    return int(value) if isinstance(value, float) else value


# Chunk fields stored at the top of the payload; every other filter field is user metadata.
TOP_LEVEL_FIELDS = frozenset({"doc_id", "content_type"})


def _payload_key(field: str) -> str:
    return field if field in TOP_LEVEL_FIELDS else f"metadata.{field}"


def _metadata_filter(filters: Filters | None) -> qm.Filter | None:
    """``{field: value}`` → exact match (``doc_id`` and ``content_type`` on the chunk, any
    other field on its metadata); a list → any of the values."""
    if not filters:
        return None
    must: list[Any] = []
    for field, value in filters.items():
        key = _payload_key(field)
        if not isinstance(value, list):
            must.append(qm.FieldCondition(key=key, match=qm.MatchValue(value=_match_value(value))))
            continue
        values = [_match_value(v) for v in value]
        if all(isinstance(v, str) for v in values) or all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            must.append(qm.FieldCondition(key=key, match=qm.MatchAny(any=values)))
        else:  # MatchAny takes only all-strings or all-ints; booleans and mixes need a should
            should = [qm.FieldCondition(key=key, match=qm.MatchValue(value=v)) for v in values]
            must.append(qm.Filter(should=should))
    return qm.Filter(must=must)
