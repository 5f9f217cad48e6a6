"""Local mode's lexical search: an in-process mirror of the collection's sparse vectors.

Qdrant's embedded local mode scores a sparse query by scanning every point in Python (linear in
the corpus). In local mode the folder is locked by the one client that opened it, so the
retriever holding that client sees every write and can keep a ``SparseIndex`` exactly in step,
answering the lexical side from postings with the scores Qdrant computes, then fusing it with
Qdrant's dense results the way Qdrant fuses prefetches.

Tenants and ACLs: each point's (tenant, ACL) is interned as a tag; a search admits only the
tags its ``Access`` may read (a mask over the postings), and the dense side is filtered in
Qdrant unless every stored point is visible to the caller anyway (one tenant, no ACLs: the
common case costs nothing). Documents are keyed by (tenant, doc id).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm
from qdrant_client.hybrid.fusion import distribution_based_score_fusion, reciprocal_rank_fusion

from ragserve.retrieval.payload import SPARSE_NAME, VECTOR_NAME, chunk_fields
from ragserve.retrieval.sparse import LexicalEncoder
from ragserve.retrieval.sparse_index import SparseIndex
from ragserve.schemas import ScoredChunk
from ragserve.security.access import DEFAULT_TENANT, Access
from ragserve.retrieval.payload import scoped_filter

__all__ = ["LocalLexicalMirror", "LexicalPoint"]

log = logging.getLogger("ragserve.retriever")

LexicalPoint = tuple[str, list[int], list[float]]  # point id, term indices, term weights
_PAGE = 256


class LocalLexicalMirror:
    """The lexical vectors of one local-mode collection, bound to the client that owns it.

    The owner calls ``load()`` once, then ``apply_replace`` / ``apply_delete`` after each write
    Qdrant has applied, so the mirror never holds what Qdrant does not. Unfiltered sparse and
    hybrid queries go to ``search``; filtered ones stay with Qdrant (the mirror holds no
    payloads). Qdrant client errors propagate to the caller, which maps them. Not thread-safe:
    used from the retriever's event loop only.
    """

    def __init__(self, client: AsyncQdrantClient, collection: str, encoder: LexicalEncoder) -> None:
        self._client = client
        self._collection = collection
        self._encoder = encoder
        self._index = SparseIndex()
        self._tags: dict[tuple[str, tuple[str, ...]], int] = {}  # (tenant, acl) -> tag
        self._doc_tags: dict[str, tuple[int, int]] = {}  # doc key -> (tag, points)
        self._tag_points: dict[int, int] = {}  # tag -> points stored (with or without terms)

    def __len__(self) -> int:
        """Points with at least one term."""
        return len(self._index)

    async def load(self) -> None:
        """Build the index from every point stored in the collection."""
        docs: dict[tuple[str, str], tuple[tuple[str, ...], list[LexicalPoint]]] = {}
        offset = None
        while True:
            points, offset = await self._client.scroll(
                self._collection, limit=_PAGE, offset=offset,
                with_payload=["doc_id", "tenant", "acl"], with_vectors=[SPARSE_NAME],
            )
            for p in points:
                if not p.payload:
                    continue
                sparse = (p.vector or {}).get(SPARSE_NAME) if isinstance(p.vector, dict) else None
                key = (p.payload.get("tenant") or DEFAULT_TENANT, p.payload["doc_id"])
                entry = docs.setdefault(key, (tuple(p.payload.get("acl") or ()), []))
                entry[1].append((str(p.id), list(sparse.indices) if sparse else [],
                                 list(sparse.values) if sparse else []))
            if offset is None:
                break
        for (tenant, doc_id), (acl, pts) in docs.items():
            self.apply_replace(tenant, [(doc_id, acl, pts)])
        log.info("lexical index of %r: %d points in memory", self._collection, len(self))

    def apply_replace(self, tenant: str,
                      documents: Iterable[tuple[str, tuple[str, ...], list[LexicalPoint]]]) -> None:
        """Make each (doc id, ACL, points) of ``tenant`` its only points (an empty list
        removes the document)."""
        for doc_id, acl, points in documents:
            key = f"{tenant}\x00{doc_id}"
            self._forget(key)
            points = list(points)
            tag = self._tags.setdefault((tenant, tuple(sorted(acl))), len(self._tags))
            self._index.replace_document(key, points, tag=tag)
            if points:
                self._doc_tags[key] = (tag, len(points))
                self._tag_points[tag] = self._tag_points.get(tag, 0) + len(points)

    def apply_delete(self, tenant: str, doc_id: str) -> None:
        key = f"{tenant}\x00{doc_id}"
        self._forget(key)
        self._index.delete_document(key)

    def _forget(self, key: str) -> None:
        tag, n = self._doc_tags.pop(key, (None, 0))
        if tag is not None:
            self._tag_points[tag] -= n
            if not self._tag_points[tag]:
                del self._tag_points[tag]

    def _visible_tags(self, access: Access) -> set[int]:
        return {tag for (tenant, acl), tag in self._tags.items() if access.can_read(tenant, acl)}

    def all_visible(self, access: Access) -> bool:
        """Whether every stored point is readable by ``access`` (then no filter is needed)."""
        visible = self._visible_tags(access)
        return all(tag in visible for tag in self._tag_points)

    async def search(self, vector: list[float], query_text: str, top_k: int, mode: str, *,
                     fusion: str, depth: int,
                     access: Access | None = None) -> list[ScoredChunk]:
        """``"sparse"``: the ``top_k`` best points sharing a term with ``query_text``.
        ``"hybrid"``: ``depth`` candidates from each side, dense from Qdrant, fused
        by ``fusion`` (``"rrf"`` or ``"dbsf"``) with qdrant-client's own functions, the ones
        local mode applies to prefetches. Payloads come from Qdrant."""
        access = access or Access()
        everything = self.all_visible(access)
        tags = None if everything else self._visible_tags(access)
        indices, values = self._encoder.query(query_text)
        if mode != "hybrid":
            depth = top_k
        lexical = [qm.ScoredPoint(id=pid, version=0, score=score)
                   for pid, score in self._index.search(indices, values, depth, tags=tags)]
        if mode == "sparse":
            ranked = lexical[:top_k]
        else:
            dense = (await self._client.query_points(
                self._collection, query=vector, using=VECTOR_NAME, limit=depth,
                query_filter=None if everything else scoped_filter(None, access),
                with_payload=False, with_vectors=False,
            )).points
            sources = [dense, lexical]
            ranked = (reciprocal_rank_fusion(sources, limit=top_k) if fusion == "rrf"
                      else distribution_based_score_fusion(sources, limit=top_k))
        records = await self._client.retrieve(
            self._collection, ids=[p.id for p in ranked], with_payload=True, with_vectors=False)
        payloads = {str(r.id): r.payload for r in records}
        return [
            ScoredChunk(**chunk_fields(p.id, payloads[str(p.id)]), score=p.score, retrieval_score=p.score)
            for p in ranked if str(p.id) in payloads
        ]
