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
        self, vector: list[float], top_k: int, filters: Filters | None = None
    ) -> list[ScoredChunk]: ...

    async def chunk_hashes(self, doc_id: str) -> dict[str, str]:
        """Chunk id -> document hash for the chunks stored for a document (empty if none).

        Ingestion compares these with a re-sent document's chunk ids and hash to skip
        unchanged documents before embedding anything."""

    async def replace_document(
        self, doc_id: str, chunks: list[Chunk], vectors: list[list[float]]
    ) -> None:
        """Make ``chunks`` the document's only chunks, in one update request."""

    async def get_document(self, doc_id: str) -> list[Chunk]: ...

    async def delete_document(self, doc_id: str) -> int:
        """Remove every chunk of the document; returns how many there were."""

    async def count(self) -> int: ...

    async def health(self) -> dict: ...
