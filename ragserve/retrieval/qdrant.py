"""Qdrant retriever backend: embedded local mode (a folder on disk) or a Qdrant server.

One point per chunk: id = ``chunk_id`` (a canonical UUID string), one named dense vector
``"dense"`` (cosine), payload = the chunk's fields. The collection's ``metadata`` records the
embedding model and dimension, and the lexical analyzer, so a replica started with another
embedder or another analysis of text refuses to serve.

Local mode is for development and small corpora: qdrant-client runs every call synchronously on
the event loop (an exact brute-force search), and the folder is locked by the one client that
opened it, so only one process (one retriever replica) can use it. Use a server beyond that.
Its sparse scoring is a Python scan of every point, so in local mode unfiltered sparse and
hybrid queries go to ``LocalLexicalMirror`` (same scores, from an in-process inverted index).
How chunks and filters map onto points lives in ``payload``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from ragserve.config import RetrievalMode, RetrieverConfig
from ragserve.errors import (
    ConfigurationError,
    RagServeError,
    StageTimeoutError,
    StageUnavailableError,
)
from ragserve.retrieval.lexical_mirror import LexicalPoint, LocalLexicalMirror
from ragserve.retrieval.payload import (
    ANALYZER_KEY,
    SPARSE_NAME,
    analyzer_mismatch,
    VECTOR_NAME,
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

__all__ = ["QdrantRetriever", "VECTOR_NAME", "SCHEMA_VERSION"]

log = logging.getLogger("ragserve.retriever")

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
        self._mirror: LocalLexicalMirror | None = None  # local mode: built by ensure_collection

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
            try:
                api_key = self.config.api_key.resolve() if self.config.api_key else None
            except ValueError as exc:  # a missing Secret: say which, never the value
                raise ConfigurationError(f"retriever api_key: {exc}") from None
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
        # The mirror is bound to this client; a later warm_up + ensure_collection rebuilds it.
        client, self._client, self._mirror = self._client, None, None
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
                            ANALYZER_KEY: self.encoder.analyzer,
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
            if self._has_sparse and (error := analyzer_mismatch(
                    self.collection, info.config.metadata, self.encoder.analyzer)):
                raise error
            if not self._has_sparse:
                log.warning("collection %r has no lexical vectors (built before hybrid search): "
                            "sparse and hybrid queries use dense retrieval until it is re-indexed",
                            self.collection)
            elif self.config.local and self.config.local_sparse_index and self._mirror is None:
                # Once per client: this replica is the folder's only writer, so the mirror
                # stays in step after that (every ingress replica calls ensure_collection).
                mirror = LocalLexicalMirror(self.client, self.collection, self.encoder)
                await mirror.load()
                self._mirror = mirror

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
        # tenant and acl: every query is constrained by them (docs/security.md).
        wanted = list(dict.fromkeys(["doc_id", "tenant", "acl",
                                     *map(payload_key, self.config.filterable_fields)]))
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
        access: Access | None = None,
    ) -> list[ScoredChunk]:
        """Top-k chunks. ``dense`` ranks by cosine; ``sparse`` by BM25 over ``query_text``;
        ``hybrid`` prefetches both and fuses them in Qdrant (``config.fusion``). Without
        ``query_text`` or lexical vectors in the collection, every mode is dense. ``access``
        (None: the default tenant) is ANDed with ``filters`` inside Qdrant (or applied by the
        local mirror), in every mode."""
        access = access or Access()
        mode = mode or self.config.default_mode
        if not query_text or not self._has_sparse:
            mode = "dense"
        user_filter = metadata_filter(filters)
        if mode != "dense" and self._mirror is not None and user_filter is None:
            with self._errors("search"):
                return await self._mirror.search(
                    vector, query_text or "", top_k, mode, access=access,
                    fusion=self.config.fusion, depth=self.config.prefetch_depth(top_k))
        query_filter = (user_filter if self._mirror is not None and user_filter is None
                        and self._mirror.all_visible(access)
                        else scoped_filter(user_filter, access))
        search_params = None
        if self.config.hnsw_ef and not self.config.local:
            search_params = qm.SearchParams(hnsw_ef=self.config.hnsw_ef)
        with self._errors("search"):
            result = await self.client.query_points(
                self.collection,
                limit=top_k,
                query_filter=query_filter,
                search_params=search_params if mode == "dense" else None,
                with_payload=True,
                with_vectors=False,
                **self._query(vector, top_k, query_text or "", mode, query_filter, search_params),
            )
        return [
            ScoredChunk(**chunk_fields(p.id, p.payload), score=p.score, retrieval_score=p.score)
            for p in result.points
        ]

    def _query(self, vector: list[float], top_k: int, query_text: str, mode: str,
               query_filter: qm.Filter | None, search_params: qm.SearchParams | None) -> dict[str, Any]:
        """``query_points`` arguments for ``mode``: one named vector, or both as prefetches
        fused by Qdrant. The filter goes into each prefetch as well as the outer query."""
        if mode == "dense":
            return {"query": vector, "using": VECTOR_NAME}
        indices, values = self.encoder.query(query_text)
        sparse = qm.SparseVector(indices=indices, values=values)
        if mode == "sparse":
            return {"query": sparse, "using": SPARSE_NAME}
        depth = self.config.prefetch_depth(top_k)
        fusion = qm.Fusion.RRF if self.config.fusion == "rrf" else qm.Fusion.DBSF
        return {
            "prefetch": [
                qm.Prefetch(query=vector, using=VECTOR_NAME, limit=depth,
                            filter=query_filter, params=search_params),
                qm.Prefetch(query=sparse, using=SPARSE_NAME, limit=depth, filter=query_filter),
            ],
            "query": qm.FusionQuery(fusion=fusion),
        }

    async def chunk_hashes_many(self, doc_ids: list[str], *,
                                access: Access | None = None) -> dict[str, dict[str, str]]:
        """doc id -> {chunk id -> doc hash} for every given document of ``access``'s tenant,
        in one scan."""
        out: dict[str, dict[str, str]] = {d: {} for d in doc_ids}
        if not doc_ids:
            return out
        records = await self._scroll(
            scoped_filter(qm.Filter(must=[docs_condition(doc_ids)]), access or Access(),
                          with_acl=False),
            with_payload=["doc_hash", "doc_id"], op="chunk_hashes")
        for r in records:
            payload = r.payload or {}
            out.setdefault(payload.get("doc_id", ""), {})[str(r.id)] = payload.get("doc_hash", "")
        return out

    async def get_document(self, doc_id: str, *, access: Access | None = None) -> list[Chunk]:
        records = await self._scroll(scoped_filter(doc_filter(doc_id), access or Access()),
                                     with_payload=True, op="get_document")
        chunks = [Chunk(**chunk_fields(r.id, r.payload)) for r in records]
        return sorted(chunks, key=lambda c: c.chunk_index)

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

    async def replace_documents(
        self, documents: list[tuple[str, list[Chunk], list[list[float]]]], *,
        access: Access | None = None,
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
        access = access or Access()
        doc_ids, points, new_ids = [], [], []
        lexical: dict[str, list[LexicalPoint]] = {}
        acls: dict[str, tuple[str, ...]] = {}
        for doc_id, chunks, vectors in documents:
            if len(chunks) != len(vectors):
                raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
            for c, v in zip(chunks, vectors):
                if c.doc_id != doc_id:
                    raise ValueError(f"chunk {c.chunk_id} belongs to {c.doc_id!r}, not {doc_id!r}")
                if c.tenant != access.tenant:
                    raise ValueError(f"chunk {c.chunk_id} belongs to tenant {c.tenant!r}, "
                                     f"not {access.tenant!r}")
                acls[doc_id] = tuple(c.acl)
                if canonical_uuid(c.chunk_id) != c.chunk_id:
                    raise ValueError(f"chunk_id {c.chunk_id!r} is not a canonical UUID string")
                vector: dict[str, Any] = {VECTOR_NAME: list(v)}
                if self._has_sparse:
                    idx, val = self.encoder.document(c.text)
                    if idx:
                        vector[SPARSE_NAME] = qm.SparseVector(indices=idx, values=val)
                    lexical.setdefault(doc_id, []).append((c.chunk_id, idx, val))
                points.append(qm.PointStruct(id=c.chunk_id, vector=vector, payload=point_payload(c)))
                new_ids.append(c.chunk_id)
            doc_ids.append(doc_id)
        stale = scoped_filter(qm.Filter(
            must=[docs_condition(doc_ids)],
            must_not=[qm.HasIdCondition(has_id=new_ids)] if new_ids else None,
        ), access, with_acl=False)
        operations: list[Any] = []
        if points:
            operations.append(qm.UpsertOperation(upsert=qm.PointsList(points=points)))
        operations.append(qm.DeleteOperation(delete=qm.FilterSelector(filter=stale)))
        with self._errors("replace_documents"):
            await self.client.batch_update_points(self.collection, operations, wait=True)
        if self._mirror is not None:  # only after Qdrant applied it
            self._mirror.apply_replace(
                access.tenant, ((d, acls.get(d, ()), lexical.get(d, [])) for d in doc_ids))

    async def delete_document(self, doc_id: str, *, access: Access | None = None) -> int:
        """Delete every chunk of the document that ``access`` can see (its tenant's document,
        readable by it); returns the count taken just before deleting."""
        access = access or Access()
        selector = scoped_filter(doc_filter(doc_id), access)
        with self._errors("delete_document"):
            n = (
                await self.client.count(
                    self.collection, count_filter=selector, exact=True
                )
            ).count
            if n:
                await self.client.delete(
                    self.collection,
                    points_selector=qm.FilterSelector(filter=selector),
                    wait=True,
                )
        if self._mirror is not None and n:
            self._mirror.apply_delete(access.tenant, doc_id)
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
