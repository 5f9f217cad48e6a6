"""What the service offers its entries (the HTTP edge, the handle API, the CLI through HTTP).

``RAGPipeline`` implements it over the stages, and ``CachedPipeline`` around a
``RAGPipeline`` with the cache tiers; the edge depends on this protocol only.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Protocol, runtime_checkable

from ragserve.schemas import (
    DeleteResponse,
    DocumentChunks,
    EmbeddingsRequest,
    EmbeddingsResponse,
    IngestRequest,
    IngestResponse,
    QueryRequest,
    QueryResponse,
    RerankRequest,
    RerankResponse,
    SearchRequest,
    SearchResponse,
)

__all__ = ["RagService"]


@runtime_checkable
class RagService(Protocol):
    async def startup(self) -> None:
        """Check the index matches the embedder (``ConfigurationError`` if not)."""

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether every stage answers, and each stage's detail; never raises."""

    async def search(self, req: SearchRequest) -> SearchResponse: ...

    async def query(self, req: QueryRequest, *,
                    history: list[tuple[str, str]] | None = None) -> QueryResponse:
        """``history``: earlier (question, answer) turns given explicitly (an OpenAI-style
        ``messages`` list); they shape retrieval and the answer as a session's turns do, and
        take the place of the session's when both are given."""

    def query_events(self, req: QueryRequest, *,
                     history: list[tuple[str, str]] | None = None,
                     ) -> AsyncIterator[tuple[str, dict]]:
        """Server-sent events of a streamed answer: ``meta`` (passages, timings so far),
        ``token`` deltas, then ``done``. Request errors (422, 503 when a required stage is
        down) are raised before the first event. ``history`` as in ``query``."""

    async def rerank(self, req: RerankRequest) -> RerankResponse:
        """Score the request's documents against its query with the reranker stage."""

    async def embed(self, req: EmbeddingsRequest) -> EmbeddingsResponse: ...

    async def ingest(self, req: IngestRequest) -> IngestResponse: ...

    async def get_document(self, doc_id: str) -> DocumentChunks: ...

    async def delete_document(self, doc_id: str) -> DeleteResponse: ...
