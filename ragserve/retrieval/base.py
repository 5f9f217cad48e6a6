"""The retriever role: a vector index of chunks."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ragserve.schemas import Chunk, EmbedderInfo, Filters, ScoredChunk

__all__ = ["Retriever"]


@runtime_checkable
class Retriever(Protocol):
    async def ensure_collection(self, embedder: EmbedderInfo) -> None:
        """Create the collection for this embedder, or check an existing one matches it.

        Raises ``ConfigurationError`` when the stored index was built with another model or
        dimension: mixing vectors from two models silently corrupts search.
        """

    async def search(
        self,
        vector: list[float],
        top_k: int,
        filters: Filters | None = None,
        *,
        query_text: str | None = None,
        mode: str | None = None,
    ) -> list[ScoredChunk]:
        """Top-k chunks by ``mode`` (dense / sparse / hybrid; None: the configured default)."""

    async def chunk_hashes_many(self, doc_ids: list[str]) -> dict[str, dict[str, str]]:
        """doc id -> {chunk id -> document hash} of the stored chunks (empty dict if none).

        Ingestion compares these with re-sent documents' chunk ids and hashes to skip
        unchanged documents before embedding anything."""

    async def replace_documents(
        self, documents: list[tuple[str, list[Chunk], list[list[float]]]]
    ) -> None:
        """Make each document's chunks its only chunks, all in one update request."""

    async def get_document(self, doc_id: str) -> list[Chunk]: ...

    async def delete_document(self, doc_id: str) -> int:
        """Remove every chunk of the document; returns how many there were."""

    async def count(self) -> int: ...

    async def health(self) -> dict: ...
