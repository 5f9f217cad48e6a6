"""The write path: chunk, skip what is unchanged, embed, store — and read or delete a document.

Idempotent: a document's chunk ids derive from its id and content, so re-sending a document
changes nothing (``unchanged``) and a changed one replaces all its chunks in one write.
Everything is validated before anything is written: a bad request changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ragserve.config import IngressConfig
from ragserve.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from ragserve.ingest.chunking import TokenChunker, chunk_document
from ragserve.pipeline.calls import StageCaller
from ragserve.pipeline.stageset import StageSet
from ragserve.security.access import Access, current_access
from ragserve.schemas import (
    Chunk,
    DeleteResponse,
    DocumentChunks,
    DocumentResult,
    IngestRequest,
    IngestResponse,
)

__all__ = ["Indexer", "document_status"]

log = logging.getLogger("ragserve.indexer")


def document_status(doc_id: str, chunks: list[Chunk], stored: dict[str, str]) -> DocumentResult:
    """What writing ``chunks`` over the document's ``stored`` state (chunk id -> doc hash, as
    ``Retriever.chunk_hashes_many`` returns it) would do: ``unchanged`` when the stored chunk
    ids are exactly the new ones and all carry the new document hash (nothing to embed or
    write), else ``updated`` (some chunks stored) or ``created``. The online ingest and the bulk
    job (``graphs.indexing``) decide with this one rule."""
    new_hash = chunks[0].doc_hash if chunks else ""
    if set(stored) == {c.chunk_id for c in chunks} and all(h == new_hash for h in stored.values()):
        return DocumentResult(id=doc_id, status="unchanged", chunks=len(chunks))
    return DocumentResult(id=doc_id, status="updated" if stored else "created", chunks=len(chunks))


class Indexer:
    def __init__(self, stages: StageSet, *, chunker: TokenChunker, config: IngressConfig,
                 caller: StageCaller) -> None:
        self.stages = stages
        self.chunker = chunker
        self.config = config
        self.caller = caller

    def _validate(self, req: IngestRequest) -> None:
        limits = self.config.limits
        if len(req.documents) > limits.max_documents_per_request:
            raise PayloadTooLargeError(
                f"{len(req.documents)} documents in one request; the limit is "
                f"{limits.max_documents_per_request}",
                details={"limit": limits.max_documents_per_request, "size": len(req.documents)})
        ids = [d.id for d in req.documents]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise InvalidRequestError(f"document ids repeat within the request: {dupes[:5]}")
        for doc in req.documents:
            if len(doc.text) > limits.max_document_chars:
                raise PayloadTooLargeError(
                    f"document {doc.id!r} has {len(doc.text)} characters; the limit is "
                    f"{limits.max_document_chars}",
                    details={"id": doc.id, "limit": limits.max_document_chars,
                             "size": len(doc.text)})

    async def ingest(self, req: IngestRequest) -> IngestResponse:
        self._validate(req)
        # The caller's tenant (the guard's principal): chunk ids and payloads carry it.
        tenant = (current_access(required=False) or Access()).tenant
        t0 = time.perf_counter()
        chunked = await asyncio.to_thread(
            lambda: [(d, chunk_document(d, self.chunker, tenant)) for d in req.documents])
        t_chunk = time.perf_counter()
        # One read of the stored state and one write for the whole request: per-document
        # calls cost a full scan each in Qdrant local mode.
        stored = await self.caller.call(
            "retriever", self.stages.retriever.chunk_hashes_many([d.id for d, _ in chunked]))
        results = [document_status(doc.id, chunks, stored.get(doc.id, {}))
                   for doc, chunks in chunked]
        changed = [(doc, chunks) for (doc, chunks), r in zip(chunked, results)
                   if r.status != "unchanged"]
        texts = [c.text for _, chunks in changed for c in chunks]
        vectors = await self._embed_passages(texts) if texts else []
        updates, i = [], 0
        for doc, chunks in changed:
            updates.append((doc.id, chunks, vectors[i: i + len(chunks)]))
            i += len(chunks)
        if updates:
            await self.caller.call("retriever", self.stages.retriever.replace_documents(updates))
        t_end = time.perf_counter()
        log.info("ingested %d documents, %d chunks embedded", len(results), len(texts))
        return IngestResponse(
            documents=results,
            chunks_embedded=len(texts),
            timings_ms={"chunk_ms": round((t_chunk - t0) * 1000, 2),
                        "embed_and_store_ms": round((t_end - t_chunk) * 1000, 2)},
        )

    async def _embed_passages(self, texts: list[str]) -> list[list[float]]:
        size = self.config.chunking.embed_batch_size
        batches = [texts[i: i + size] for i in range(0, len(texts), size)]
        parts = await asyncio.gather(
            *(self.caller.call("embedder", self.stages.embedder.embed(b, "passage")) for b in batches))
        return [v for part in parts for v in part]

    async def get_document(self, doc_id: str) -> DocumentChunks:
        chunks = await self.caller.call("retriever", self.stages.retriever.get_document(doc_id))
        if not chunks:
            raise NotFoundError(f"no document with id {doc_id!r}", details={"id": doc_id})
        first = chunks[0]
        return DocumentChunks(id=doc_id, content_type=first.content_type,
                              metadata=first.metadata, doc_hash=first.doc_hash, chunks=chunks)

    async def delete_document(self, doc_id: str) -> DeleteResponse:
        deleted = await self.caller.call("retriever", self.stages.retriever.delete_document(doc_id))
        if not deleted:
            raise NotFoundError(f"no document with id {doc_id!r}", details={"id": doc_id})
        return DeleteResponse(id=doc_id, deleted_chunks=deleted)
