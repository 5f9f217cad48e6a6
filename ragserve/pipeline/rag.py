"""The RAG request flow across the stages, independent of Ray.

The ingress deployment builds one ``RAGPipeline`` around its stage clients; tests and the
evaluation harness build it around in-process stages. It composes the read path (``Ranker``,
``AnswerCore``) and the write path (``Indexer``) and implements ``ragserve.service.RagService``.
"""

from __future__ import annotations

import asyncio
import base64
import sys
from array import array
from typing import Any, AsyncIterator

from ragserve.config import IngressConfig
from ragserve.errors import InvalidRequestError, NotFoundError
from ragserve.ingest.chunking import TokenChunker
from ragserve.ordering import RETRIEVAL_ORDER_NAME
from ragserve.pipeline.answers import AnswerCore, citation, stream_done_event
from ragserve.pipeline.calls import StageCaller, describe
from ragserve.pipeline.indexer import Indexer
from ragserve.pipeline.ranking import Ranker
from ragserve.pipeline.stageset import StageSet
from ragserve.schemas import (
    DeleteResponse,
    DocumentChunks,
    EmbedderInfo,
    EmbeddingItem,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingsUsage,
    IngestRequest,
    IngestResponse,
    QueryRequest,
    QueryResponse,
    RerankedDocument,
    RerankRequest,
    RerankResponse,
    ScoredChunk,
    SearchRequest,
    SearchResponse,
)
from ragserve.tokens import count_tokens

__all__ = ["RAGPipeline"]


class RAGPipeline:
    def __init__(self, stages: StageSet, *, config: IngressConfig | None = None,
                 chunker: TokenChunker | None = None) -> None:
        self.stages = stages
        self.config = config or IngressConfig()
        self.caller = StageCaller(self.config)
        self.ranker = Ranker(stages, self.config, self.caller)
        self.indexer = Indexer(stages, chunker=chunker or TokenChunker(self.config.chunking),
                               config=self.config, caller=self.caller)
        self.answers = (AnswerCore(self.ranker, stages.generator, self.caller,
                                   stages.name_of("generator"))
                        if stages.generator is not None else None)
        self.embedder_info: EmbedderInfo | None = None

    # ------------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        call, s = self.caller.call, self.stages
        self.embedder_info = await call("embedder", s.embedder.info())
        await call("retriever", s.retriever.ensure_collection(self.embedder_info))
        health = await call("retriever", s.retriever.health())
        self.ranker.embedder_model = self.embedder_info.model
        self.ranker.retriever_name = health.get("backend")

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        async def probe(name: str, stage: Any) -> tuple[str, dict]:
            try:
                detail = await asyncio.wait_for(stage.health(), timeout=5.0)
                return name, {"ready": True, **(detail or {})}
            except Exception as exc:  # readiness reports, it never raises
                return name, {"ready": False, "error": describe(exc)}

        results = dict(await asyncio.gather(*(probe(n, s) for n, s in self.stages.items())))
        return all(r["ready"] for r in results.values()), results

    # ------------------------------------------------------------------ read path

    async def search(self, req: SearchRequest) -> SearchResponse:
        r = await self.ranker.rank(req)
        return SearchResponse(results=[citation(i + 1, c) for i, c in enumerate(r.chunks)],
                              timings=r.timings, backends=r.backends, degraded=r.degraded,
                              warnings=r.warnings)

    def _answers(self) -> AnswerCore:
        if self.answers is None:
            raise NotFoundError("this application was built without a generator (search only)")
        return self.answers

    async def query(self, req: QueryRequest, *,
                    history: list[tuple[str, str]] | None = None) -> QueryResponse:
        """Answer ``req``; ``history`` holds the session's earlier (question, answer) turns."""
        async for event, data in self._answers().run(req, history or [], stream=False):
            if event == "done":
                return data
        raise AssertionError("the answer core always ends with 'done'")

    async def query_events(self, req: QueryRequest, *,
                           history: list[tuple[str, str]] | None = None,
                           ) -> AsyncIterator[tuple[str, dict]]:
        async for event, data in self._answers().run(req, history or [], stream=True):
            if event == "meta":
                yield "meta", {
                    "citations": [citation(i + 1, c).model_dump(mode="json")
                                  for i, c in enumerate(data.chunks)],
                    "timings": data.timings.model_dump(),
                    "backends": data.backends.model_dump(),
                }
            elif event == "token":
                yield "token", {"delta": data}
            else:
                yield "done", stream_done_event(data)

    async def embed(self, req: EmbeddingsRequest) -> EmbeddingsResponse:
        info = self.embedder_info
        if req.model is not None and info is not None and req.model != info.model:
            raise InvalidRequestError(
                f"model {req.model!r} is not served here; this service embeds with {info.model!r}")
        vectors = await self.caller.call(
            "embedder", self.stages.embedder.embed(req.texts(), req.input_type))
        # Usage counts tiktoken cl100k_base tokens (what the chunker sizes by), not the
        # embedder's own word pieces: the embedder stage offers no tokenizer across its boundary.
        tokens = sum(count_tokens(t) for t in req.texts())
        return EmbeddingsResponse(
            data=[EmbeddingItem(index=i, embedding=_encoded(v, req.encoding_format))
                  for i, v in enumerate(vectors)],
            model=info.model if info else "",
            usage=EmbeddingsUsage(prompt_tokens=tokens, total_tokens=tokens),
        )

    async def rerank(self, req: RerankRequest) -> RerankResponse:
        """The reranker stage over the request's documents, within the stage's budget (its
        failure is a 503 here: there is no retriever order to fall back to). ``degraded`` when
        the stage only kept the given order (no cross-encoder loaded)."""
        texts = req.texts()
        chunks = [ScoredChunk(chunk_id=str(i), doc_id=str(i), chunk_index=i, text=t,
                              score=0.0, retrieval_score=0.0) for i, t in enumerate(texts)]
        name = self.stages.name_of("reranker")
        result = await self.caller.call(
            name, self.stages.reranker.rerank(req.query, chunks, req.top_n or len(chunks)))
        query_tokens = count_tokens(req.query)
        tokens = sum(query_tokens + count_tokens(t) for t in texts)  # one (query, text) pair each
        return RerankResponse(
            results=[RerankedDocument(
                index=c.chunk_index, relevance_score=c.score,
                document={"text": c.text} if req.return_documents else None)
                for c in result.chunks],
            model=result.backend,
            usage=EmbeddingsUsage(prompt_tokens=tokens, total_tokens=tokens),
            degraded=result.degraded or result.backend == RETRIEVAL_ORDER_NAME,
        )

    # ------------------------------------------------------------------ write path

    async def ingest(self, req: IngestRequest) -> IngestResponse:
        return await self.indexer.ingest(req)

    async def get_document(self, doc_id: str) -> DocumentChunks:
        return await self.indexer.get_document(doc_id)

    async def delete_document(self, doc_id: str) -> DeleteResponse:
        return await self.indexer.delete_document(doc_id)


def _encoded(vector: list[float], encoding_format: str) -> list[float] | str:
    """A vector as sent: floats, or base64 of little-endian float32 (OpenAI's ``base64``)."""
    if encoding_format != "base64":
        return vector
    packed = array("f", vector)
    if packed.itemsize != 4 or sys.byteorder != "little":
        raise AssertionError("float32 little-endian packing needs a little-endian 4-byte float")
    return base64.b64encode(packed.tobytes()).decode("ascii")
