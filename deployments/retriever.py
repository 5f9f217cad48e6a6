"""Retriever deployment: Qdrant (embedded local mode or a server)."""

from __future__ import annotations

from ragserve.config import RetrieverConfig
from ragserve.retrieval.qdrant import QdrantRetriever
from ragserve.schemas import Chunk, EmbedderInfo, Filters, ScoredChunk

__all__ = ["RetrieverDeployment"]


class RetrieverDeployment:
    async def __init__(self, config: RetrieverConfig, backend_cls: type = QdrantRetriever):
        self.config = RetrieverConfig.model_validate(config)
        self.backend = backend_cls(self.config)
        await self.backend.warm_up()

    async def ensure_collection(self, embedder: EmbedderInfo) -> None:
        await self.backend.ensure_collection(embedder)

    async def search(self, vector: list[float], top_k: int, filters: Filters | None = None, *,
                     query_text: str | None = None, mode: str | None = None) -> list[ScoredChunk]:
        return await self.backend.search(vector, top_k, filters, query_text=query_text, mode=mode)

    async def chunk_hashes_many(self, doc_ids: list[str]) -> dict[str, dict[str, str]]:
        return await self.backend.chunk_hashes_many(doc_ids)

    async def replace_documents(self, documents: list[tuple[str, list[Chunk], list[list[float]]]]) -> None:
        await self.backend.replace_documents(documents)

    async def get_document(self, doc_id: str) -> list[Chunk]:
        return await self.backend.get_document(doc_id)

    async def delete_document(self, doc_id: str) -> int:
        return await self.backend.delete_document(doc_id)

    async def count(self) -> int:
        return await self.backend.count()

    async def health(self) -> dict:
        return await self.backend.health()

    async def check_health(self) -> None:
        await self.backend.health()  # raises StageUnavailableError when Qdrant is gone

    async def __del__(self):
        await self.backend.aclose()
