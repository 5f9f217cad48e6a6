"""Retriever deployment: Qdrant (embedded local mode, a server, or Qdrant Edge in process)."""

from __future__ import annotations

from ragserve.config import RetrieverConfig
from ragserve.retrieval import Retriever, retriever_class
from ragserve.schemas import Chunk, EmbedderInfo, Filters, ScoredChunk
from ragserve.security.access import Access

__all__ = ["RetrieverDeployment"]


class RetrieverDeployment:
    """Serves the ``Retriever`` role around one backend (``config.backend`` picks it unless
    ``backend_cls`` is given)."""

    async def __init__(self, config: RetrieverConfig,
                       backend_cls: type[Retriever] | None = None):
        self.config = RetrieverConfig.model_validate(config)
        self.backend: Retriever = (backend_cls or retriever_class(self.config))(self.config)
        await self.backend.warm_up()

    async def ensure_collection(self, embedder: EmbedderInfo) -> None:
        await self.backend.ensure_collection(embedder)

    # ``access``: the caller's tenant and groups, applied inside the backend (docs/security.md).
    async def search(self, vector: list[float], top_k: int, filters: Filters | None = None, *,
                     query_text: str | None = None, mode: str | None = None,
                     access: Access | None = None) -> list[ScoredChunk]:
        return await self.backend.search(vector, top_k, filters, query_text=query_text, mode=mode,
                                         access=access)

    async def chunk_hashes_many(self, doc_ids: list[str], *,
                                access: Access | None = None) -> dict[str, dict[str, str]]:
        return await self.backend.chunk_hashes_many(doc_ids, access=access)

    async def replace_documents(self, documents: list[tuple[str, list[Chunk], list[list[float]]]],
                                *, access: Access | None = None) -> None:
        await self.backend.replace_documents(documents, access=access)

    async def get_document(self, doc_id: str, *, access: Access | None = None) -> list[Chunk]:
        return await self.backend.get_document(doc_id, access=access)

    async def delete_document(self, doc_id: str, *, access: Access | None = None) -> int:
        return await self.backend.delete_document(doc_id, access=access)

    async def count(self) -> int:
        return await self.backend.count()

    async def health(self) -> dict:
        return await self.backend.health()

    async def check_health(self) -> None:
        await self.backend.health()  # raises StageUnavailableError when Qdrant is gone

    async def __del__(self):
        await self.backend.aclose()
