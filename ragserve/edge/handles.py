"""The Python entry for Serve handles (notebooks, other deployments): the same validation,
guard and service as the HTTP routes.

    app = serve.get_app_handle("ragserve")
    app.query.remote({"query": "..."}).result()
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, TypeVar

from pydantic import BaseModel, ValidationError

from ragserve.edge.errors import validation_message
from ragserve.edge.guard import Guard
from ragserve.errors import InvalidRequestError, RagServeError
from ragserve.observability import HttpObserver, note_error
from ragserve.service import RagService
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

__all__ = ["HandleAPI"]

M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], request: M | dict) -> M:
    """The request model, or ``InvalidRequestError`` with the same message HTTP's 422 has."""
    try:
        return model.model_validate(request)
    except ValidationError as exc:
        raise InvalidRequestError(validation_message(exc.errors())) from None


class HandleAPI:
    """Each method passes the guard with the caller's ``credentials`` (an API key, as the HTTP
    bearer token), validates its request as the HTTP route does, then calls the service."""

    def __init__(self, service: Callable[[], RagService], guard: Guard,
                 observer: HttpObserver | None = None) -> None:
        self._service = service
        self._guard = guard
        self._observer = observer

    @asynccontextmanager
    async def _observed(self, operation: str) -> AsyncIterator[None]:
        """A handle call measured as an HTTP request is (``observer``): its count, latency,
        errors by type, a server span at the ingress (the stages' spans nest under it) and
        one log record, labelled ``handle.<operation>``."""
        if self._observer is None:
            yield
            return
        label = f"handle.{operation}"
        state = self._observer.begin("HANDLE", label, {})
        status = 200
        try:
            yield
        except RagServeError as exc:
            status = exc.status_code
            note_error(exc.code)
            raise
        except BaseException:
            status = 500
            note_error("internal")
            raise
        finally:
            self._observer.end(state, method="HANDLE", path=label, template=label,
                               status=status)

    async def query(self, request: QueryRequest | dict, *,
                    credentials: str | None = None) -> QueryResponse:
        """Always a whole answer (a handle caller streams nothing: ``stream`` is ignored)."""
        async with self._observed("query"):
            await self._guard.admit("query", transport="handle", credentials=credentials)
            req = _validate(QueryRequest, request)
            return await self._service().query(req.model_copy(update={"stream": False}))

    async def search(self, request: SearchRequest | dict, *,
                     credentials: str | None = None) -> SearchResponse:
        async with self._observed("search"):
            await self._guard.admit("search", transport="handle", credentials=credentials)
            req = _validate(SearchRequest, request)
            return await self._service().search(req)

    async def rerank(self, request: RerankRequest | dict, *,
                     credentials: str | None = None) -> RerankResponse:
        async with self._observed("rerank"):
            await self._guard.admit("search", transport="handle", credentials=credentials)
            req = _validate(RerankRequest, request)
            return await self._service().rerank(req)

    async def embed(self, request: EmbeddingsRequest | dict, *,
                    credentials: str | None = None) -> EmbeddingsResponse:
        async with self._observed("embed"):
            await self._guard.admit("embeddings", transport="handle", credentials=credentials)
            req = _validate(EmbeddingsRequest, request)
            return await self._service().embed(req)

    async def ingest(self, request: IngestRequest | dict, *,
                     credentials: str | None = None) -> IngestResponse:
        async with self._observed("ingest"):
            await self._guard.admit("ingest", transport="handle", credentials=credentials)
            req = _validate(IngestRequest, request)
            return await self._service().ingest(req)

    async def get_document(self, doc_id: str, *,
                           credentials: str | None = None) -> DocumentChunks:
        async with self._observed("get_document"):
            await self._guard.admit("read_document", transport="handle", credentials=credentials)
            return await self._service().get_document(doc_id)

    async def delete_document(self, doc_id: str, *,
                              credentials: str | None = None) -> DeleteResponse:
        async with self._observed("delete_document"):
            await self._guard.admit("delete_document", transport="handle", credentials=credentials)
            return await self._service().delete_document(doc_id)

    async def readiness(self) -> dict[str, Any]:
        ready, stages = await self._service().readiness()
        return {"ready": ready, "stages": stages}
