"""The HTTP API: routes over a ``RagService``, behind the edge's middleware, guard and error
mapping. The ingress deployment hands ``create_app(...)`` to ``@serve.ingress``; tests build it
around in-process stages."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable

from fastapi import Depends, FastAPI, Request, Response, Security
from fastapi.security import HTTPBearer
from fastapi.responses import JSONResponse, StreamingResponse

from ragserve.edge.admin import admin_router
from ragserve.edge.context import Operation, RequestContext
from ragserve.edge.errors import ERROR_RESPONSES, install_error_handlers
from ragserve.edge.guard import Guard
from ragserve.edge.middleware import EdgeMiddleware
from ragserve.edge.openai import openai_router
from ragserve.edge.playground import playground_router
from ragserve.errors import RagServeError
from ragserve.observability.service import HttpObserver
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

__all__ = ["create_app"]


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return None


# Declares bearer auth in the OpenAPI spec; the guard's checks decide (no auto 403 here).
_BEARER = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")


def create_app(service: Callable[[], RagService], *, guard: Guard | None = None,
               max_request_bytes: int = 20_000_000, title: str = "ragserve",
               observer: HttpObserver | None = None,
               model_name: str | None = None, keyring: Any = None) -> FastAPI:
    """``service`` returns the service (so the app can exist before the pipeline does);
    ``observer`` measures, traces and logs each HTTP request (none: nothing is recorded);
    ``model_name`` is what the OpenAI-compatible routes serve (default: ``title``; the ingress
    passes its Serve application's name); ``keyring`` (a ``ragserve.security.keys.KeyRing``)
    adds the admin routes for run-time keys under ``/v1/admin/keys``."""
    guard = guard or Guard()
    app = FastAPI(
        title=title,
        version="0.1.0",
        description="Retrieval-augmented generation on Ray Serve: embed → retrieve → rerank → generate.",
    )
    install_error_handlers(app)
    app.add_middleware(EdgeMiddleware, max_body_bytes=max_request_bytes, observer=observer)

    def admitted(operation: Operation) -> Callable[..., Any]:
        async def dependency(request: Request, response: Response,
                             _scheme: Any = Security(_BEARER)) -> RequestContext:
            ctx = await guard.admit(operation, transport="http", credentials=_bearer(request))
            response.headers.update(ctx.response_headers)  # RateLimit-* (security checks)
            return ctx
        return Depends(dependency)

    @app.get("/healthz", tags=["health"], summary="Liveness: the ingress answers.")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: every stage is loaded and answers.",
             responses={200: {"description": "Ready: `{ready, stages}`; a stage may say "
                              "`status: degraded` (e.g. the generator on a fallback)"},
                        503: {"description": "Not ready: `{ready: false, stages}`, the failing "
                              "stage with its `error`"}})
    async def readyz() -> JSONResponse:
        ready, stages = await service().readiness()
        return JSONResponse({"ready": ready, "stages": stages}, status_code=200 if ready else 503)

    @app.post("/v1/search", response_model=SearchResponse, responses=ERROR_RESPONSES,
              tags=["rag"], summary="Retrieve and rerank passages (no generation).")
    async def search(req: SearchRequest, _: RequestContext = admitted("search")) -> SearchResponse:
        return await service().search(req)

    @app.post("/v1/query", response_model=QueryResponse,
              responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {
                  "schema": {"type": "object", "description": "One server-sent event: "
                             "`meta` (citations, timings), `token`…, then `done` (the whole "
                             "answer) or `error`; `data` is JSON text.",
                             "properties": {"event": {"type": "string", "enum": [
                                 "meta", "token", "done", "error"]},
                                            "data": {"type": "string"}}}}},
                                                  "description": "The answer; with "
                                                  "`stream: true`, server-sent events."}},
              tags=["rag"], summary="Answer a question from the indexed documents, with citations.")
    async def query(req: QueryRequest, _: RequestContext = admitted("query")):
        if not req.stream:
            return await service().query(req)
        events = service().query_events(req)
        # The first event comes after validation and ranking: a bad request or a stage that
        # is down answers with its status code, not with a 200 stream carrying an error.
        first = await events.__anext__()
        return StreamingResponse(
            _sse(first, events), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse, responses=ERROR_RESPONSES,
              tags=["rag"], summary="Embed texts with the service's embedder (OpenAI-style).")
    async def embeddings(req: EmbeddingsRequest,
                         _: RequestContext = admitted("embeddings")) -> EmbeddingsResponse:
        return await service().embed(req)

    @app.post("/v1/rerank", response_model=RerankResponse, responses=ERROR_RESPONSES,
              tags=["rag"], summary="Score documents against a query with the reranker stage "
                                    "(the shape TEI, Infinity and Cohere use).")
    async def rerank(req: RerankRequest,
                     _: RequestContext = admitted("search")) -> RerankResponse:
        return await service().rerank(req)

    @app.post("/v1/documents", response_model=IngestResponse, responses=ERROR_RESPONSES,
              tags=["documents"], summary="Add or replace documents (idempotent).")
    async def ingest(req: IngestRequest,
                     _: RequestContext = admitted("ingest")) -> IngestResponse:
        return await service().ingest(req)

    @app.get("/v1/documents/{doc_id:path}", response_model=DocumentChunks,
             responses=ERROR_RESPONSES, tags=["documents"], summary="A document's chunks.")
    async def get_document(doc_id: str,
                           _: RequestContext = admitted("read_document")) -> DocumentChunks:
        return await service().get_document(doc_id)

    @app.delete("/v1/documents/{doc_id:path}", response_model=DeleteResponse,
                responses=ERROR_RESPONSES, tags=["documents"], summary="Delete a document.")
    async def delete_document(doc_id: str,
                              _: RequestContext = admitted("delete_document")) -> DeleteResponse:
        return await service().delete_document(doc_id)

    # OpenAI-compatible chat and models (errors in OpenAI's shape there), and the playground.
    app.include_router(openai_router(service, admitted, model=model_name or title))
    app.include_router(playground_router())
    if keyring is not None:
        app.include_router(admin_router(keyring, admitted))
    return app


def _event(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


async def _sse(first: tuple[str, dict],
               events: AsyncIterator[tuple[str, dict]]) -> AsyncIterator[bytes]:
    yield _event(*first)
    try:
        async for event, data in events:
            yield _event(event, data)
    except RagServeError as exc:  # after the first event the status is sent: say it in-band
        yield _event("error", exc.to_dict())
