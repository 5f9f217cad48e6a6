"""LangChain over ragserve (``pip install 'ragserve[langchain]'``, on ``langchain-core``).

- ``RagServeRetriever``: a ``BaseRetriever`` over HTTP (``/v1/search``, sync and async, through
  ``ragserve.client``), returning ``Document``s whose metadata holds the chunk's own metadata
  plus ``doc_id``, ``chunk_id``, ``score`` (the reranker's) and ``rank``.
- ``RagServeHandleRetriever``: the same over a Serve application handle
  (``serve.get_app_handle("ragserve")``), inside the Ray cluster; the handle passes the same
  guard and validation as HTTP.
- ``RagServeEmbeddings``: ``Embeddings`` over ``/v1/embeddings`` (query and passage kinds).
- ``RagServeAnswer``: a ``Runnable`` for the whole answer: a question (or
  ``{"question": ..., **options}``) in, ``{"answer": str, "citations": [Document, ...],
  "response": QueryResponse}`` out; its citations carry ``number`` and ``cited``.

    from ragserve.integrations.langchain import RagServeRetriever, RagServeAnswer
    retriever = RagServeRetriever(base_url="http://127.0.0.1:8000", rerank_top_n=4)
    docs = retriever.invoke("How does the embedder batch requests?")
    chain = RagServeAnswer(base_url="http://127.0.0.1:8000") | (lambda out: out["answer"])

This module imports no Ray: the handle is used through its ``.remote()`` calls only.
"""

from __future__ import annotations

from typing import Any, Optional

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ragserve.client import DEFAULT_URL, AsyncRagServeClient, RagServeClient
from ragserve.schemas import Citation, QueryResponse, SearchResponse

__all__ = ["RagServeRetriever", "RagServeHandleRetriever", "RagServeEmbeddings",
           "RagServeAnswer", "to_document"]


def to_document(c: Citation, rank: int | None = None) -> Document:
    """A passage as a LangChain ``Document`` (its id is the chunk id)."""
    meta = {**c.metadata, "doc_id": c.doc_id, "chunk_id": c.chunk_id, "score": c.score,
            "number": c.number, "cited": c.cited}
    if rank is not None:
        meta["rank"] = rank
    return Document(id=c.chunk_id, page_content=c.text, metadata=meta)


def _documents(resp: SearchResponse) -> list[Document]:
    return [to_document(c, rank=i) for i, c in enumerate(resp.results)]


class _Connection(BaseModel):
    """Where the service is and how to call it (shared by the HTTP adapters)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    base_url: str = Field(default=DEFAULT_URL, description="The service's URL.")
    api_key: Optional[str] = Field(default=None, description="Sent as a bearer token.")
    timeout_s: float = Field(default=120.0, gt=0)
    _client: Optional[RagServeClient] = PrivateAttr(default=None)

    def _sync(self) -> RagServeClient:
        if self._client is None:
            self._client = RagServeClient(self.base_url, api_key=self.api_key,
                                          timeout_s=self.timeout_s)
        return self._client

    def _async(self) -> AsyncRagServeClient:
        # An httpx.AsyncClient belongs to one event loop: one per call keeps this safe to use
        # from any loop (LangChain runs sync callers' async paths in fresh loops).
        return AsyncRagServeClient(self.base_url, api_key=self.api_key,
                                   timeout_s=self.timeout_s)


class _SearchOptions(BaseModel):
    top_k: int = Field(default=20, ge=1, le=200, description="Candidates from the retriever.")
    rerank_top_n: int = Field(default=5, ge=1, le=200, description="Documents returned.")
    filters: Optional[dict[str, Any]] = Field(default=None, description="Metadata filters.")
    mode: Optional[str] = Field(default=None, description="dense, sparse or hybrid.")

    def _options(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "rerank_top_n": self.rerank_top_n,
                "filters": self.filters, "mode": self.mode}


class RagServeRetriever(BaseRetriever, _Connection, _SearchOptions):
    """Retrieved and reranked passages from ``/v1/search`` as ``Document``s."""

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return _documents(self._sync().search(query, **self._options()))

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun
                                       ) -> list[Document]:
        async with self._async() as client:
            return _documents(await client.search(query, **self._options()))


class RagServeHandleRetriever(BaseRetriever, _SearchOptions):
    """The same over a Serve application handle (``serve.get_app_handle(name)``);
    ``credentials`` is passed to the guard as an API key."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    handle: Any = Field(description="The ragserve application's DeploymentHandle.")
    credentials: Optional[str] = None

    def _request(self, query: str) -> dict[str, Any]:
        return {"query": query, **{k: v for k, v in self._options().items() if v is not None}}

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        resp = self.handle.search.remote(self._request(query),
                                         credentials=self.credentials).result()
        return _documents(resp)

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun
                                       ) -> list[Document]:
        resp = await self.handle.search.remote(self._request(query),
                                               credentials=self.credentials)
        return _documents(resp)


class RagServeEmbeddings(_Connection, Embeddings):
    """The service's embedder over ``/v1/embeddings``: documents as ``passage``, queries as
    ``query`` (models with prefixes use them)."""

    batch_size: int = Field(default=256, ge=1, le=2048, description="Texts per request.")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            resp = self._sync().embeddings(texts[i:i + self.batch_size], "passage")
            out += [list(d.embedding) for d in resp.data]
        return out

    def embed_query(self, text: str) -> list[float]:
        return list(self._sync().embeddings([text], "query").data[0].embedding)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        async with self._async() as client:
            for i in range(0, len(texts), self.batch_size):
                resp = await client.embeddings(texts[i:i + self.batch_size], "passage")
                out += [list(d.embedding) for d in resp.data]
        return out

    async def aembed_query(self, text: str) -> list[float]:
        async with self._async() as client:
            return list((await client.embeddings([text], "query")).data[0].embedding)


class RagServeAnswer(Runnable[Any, dict]):
    """The whole answer from ``/v1/query``: ``{"answer", "citations", "response"}``.

    Input: the question, or a dict with ``question`` (or ``query``) and any ``/v1/query``
    options (``rerank_top_n``, ``filters``, ``max_tokens``, ``session_id`` ...), which override
    the ones given here."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None,
                 timeout_s: float = 120.0, **options: Any) -> None:
        self.connection = _Connection(base_url=base_url, api_key=api_key, timeout_s=timeout_s)
        self.options = options

    def _split(self, input: Any) -> tuple[str, dict[str, Any]]:
        if isinstance(input, str):
            return input, dict(self.options)
        if isinstance(input, dict):
            rest = dict(input)
            question = rest.pop("question", None) or rest.pop("query", None)
            if not isinstance(question, str):
                raise TypeError("RagServeAnswer takes a question or {'question': ..., ...}")
            return question, {**self.options, **rest}
        raise TypeError(f"RagServeAnswer cannot take {type(input).__name__}")

    @staticmethod
    def _output(resp: QueryResponse) -> dict:
        return {"answer": resp.answer,
                "citations": [to_document(c) for c in resp.citations],
                "response": resp}

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict:
        question, options = self._split(input)
        return self._call_with_config(
            lambda q: self._output(self.connection._sync().query(q, **options)),
            question, config, run_type="chain")

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> dict:
        question, options = self._split(input)

        async def run(q: str) -> dict:
            async with self.connection._async() as client:
                return self._output(await client.query(q, **options))
        return await self._acall_with_config(run, question, config, run_type="chain")
