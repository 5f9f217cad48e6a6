"""Ingress deployment: the FastAPI app in front of the stage handles."""

from __future__ import annotations

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments._client import StageClient
from graphs.args import IngressConfig
from ragserve.api import create_app
from ragserve.cache import CacheLayer
from ragserve.ingest.chunking import TokenChunker
from ragserve.pipeline import PipelineSettings, RAGPipeline
from ragserve.schemas import (
    DeleteResponse,
    DocumentChunks,
    EmbeddingsRequest,
    EmbeddingsResponse,
    IngestRequest,
    IngestResponse,
    QueryRequest,
    QueryResponse,
    SearchRequest,
    SearchResponse,
)

__all__ = ["IngressDeployment"]


@serve.ingress()
class IngressDeployment:
    """Holds no model. At start-up it checks that the index matches the embedder; a mismatch
    fails the replica with a ``ConfigurationError`` instead of serving corrupt results."""

    async def __init__(
        self,
        config: IngressConfig,
        embedder: DeploymentHandle,
        retriever: DeploymentHandle,
        reranker: DeploymentHandle,
        generator: DeploymentHandle | None = None,
        fingerprint: str = "",
    ):
        self.config = IngressConfig.model_validate(config)
        limits = self.config.limits
        # The cache tiers wrap the stage clients; the stages never see them.
        self.cache = CacheLayer.from_config(self.config.cache)
        pipeline = RAGPipeline(
            embedder=self.cache.embedder(StageClient(embedder, "embedder")),
            retriever=StageClient(retriever, "retriever"),
            reranker=StageClient(reranker, "reranker"),
            generator=StageClient(generator, "generator") if generator is not None else None,
            chunker=TokenChunker(self.config.chunking),
            settings=PipelineSettings(
                stage_timeout_s=self.config.stage_timeout_s,
                max_query_chars=limits.max_query_chars,
                max_documents_per_request=limits.max_documents_per_request,
                max_document_chars=limits.max_document_chars,
                embed_batch_size=self.config.chunking.embed_batch_size,
                retrieval_turns=self.config.cache.sessions.retrieval_turns,
                stage_timeouts_s=dict(self.config.stage_timeouts_s),
            ),
        )
        self.pipeline = self.cache.pipeline(pipeline, fingerprint=fingerprint)
        await self.pipeline.startup()

    # Python API for handles (notebooks): the same validation and flow as the HTTP routes.

    async def query(self, request: QueryRequest | dict) -> QueryResponse:
        req = QueryRequest.model_validate(request)
        if req.stream:
            req = req.model_copy(update={"stream": False})
        return await self.pipeline.query(req)

    async def search(self, request: SearchRequest | dict) -> SearchResponse:
        return await self.pipeline.search(SearchRequest.model_validate(request))

    async def ingest(self, request: IngestRequest | dict) -> IngestResponse:
        return await self.pipeline.ingest(IngestRequest.model_validate(request))

    async def embed(self, request: EmbeddingsRequest | dict) -> EmbeddingsResponse:
        return await self.pipeline.embed(EmbeddingsRequest.model_validate(request))

    async def get_document(self, doc_id: str) -> DocumentChunks:
        return await self.pipeline.get_document(doc_id)

    async def delete_document(self, doc_id: str) -> DeleteResponse:
        return await self.pipeline.delete_document(doc_id)

    async def readiness(self) -> dict:
        ready, stages = await self.pipeline.readiness()
        return {"ready": ready, "stages": stages}

    async def cache_stats(self) -> dict:
        """Hit/miss counters per tier and the store's state (for metrics exporters)."""
        return self.pipeline.health()

    async def __del__(self):
        await self.cache.aclose()  # the Redis connection pool, when there is one

    def __serve_build_asgi_app__(self):
        return create_app(lambda: self.pipeline, max_request_bytes=self.config.limits.max_request_chars)
