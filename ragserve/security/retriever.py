"""The access filter as a layer around the retriever (same ``Retriever`` protocol).

The ingress wraps its retriever client in ``AccessControlledRetriever``: every call takes the
request's ``Access`` from the principal the guard bound, and hands it to the retriever stage,
which applies it inside the backend whatever filters the request carries. A call with no
principal bound (a path that skipped the guard) fails closed (``PermissionError``). Reads are
written to the audit log.
"""

from __future__ import annotations

from typing import Any

from ragserve.schemas import Chunk, EmbedderInfo, Filters, ScoredChunk
from ragserve.security.access import Access, current_access
from ragserve.security.audit import AuditLog

__all__ = ["AccessControlledRetriever"]


def _access() -> Access:
    access = current_access(required=True)
    assert access is not None
    return access


class AccessControlledRetriever:
    def __init__(self, inner: Any, audit: AuditLog | None = None) -> None:
        self.inner = inner
        self.audit = audit

    async def warm_up(self) -> None:
        await self.inner.warm_up()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def ensure_collection(self, embedder: EmbedderInfo) -> None:
        await self.inner.ensure_collection(embedder)

    async def search(self, vector: list[float], top_k: int, filters: Filters | None = None, *,
                     query_text: str | None = None, mode: str | None = None,
                     access: Access | None = None) -> list[ScoredChunk]:
        hits = await self.inner.search(vector, top_k, filters, query_text=query_text, mode=mode,
                                       access=_access())
        if self.audit is not None:
            self.audit.record("search", [h.chunk_id for h in hits], [h.doc_id for h in hits])
        return hits

    async def chunk_hashes_many(self, doc_ids: list[str], *,
                                access: Access | None = None) -> dict[str, dict[str, str]]:
        return await self.inner.chunk_hashes_many(doc_ids, access=_access())

    async def replace_documents(self, documents: list[tuple[str, list[Chunk], list[list[float]]]],
                                *, access: Access | None = None) -> None:
        await self.inner.replace_documents(documents, access=_access())

    async def get_document(self, doc_id: str, *, access: Access | None = None) -> list[Chunk]:
        chunks = await self.inner.get_document(doc_id, access=_access())
        if self.audit is not None and chunks:
            self.audit.record("get_document", [c.chunk_id for c in chunks], [doc_id])
        return chunks

    async def delete_document(self, doc_id: str, *, access: Access | None = None) -> int:
        return await self.inner.delete_document(doc_id, access=_access())

    async def count(self) -> int:
        return await self.inner.count()

    async def health(self) -> dict:
        return await self.inner.health()
