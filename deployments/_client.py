"""Stage clients: a DeploymentHandle made to satisfy the role Protocol of its stage.

``EmbedderClient`` is an ``Embedder``, ``RetrieverClient`` a ``Retriever`` and so on, method by
method, so the pipeline is typed by roles and a reader can jump from the pipeline to a stage.
Ray wraps exceptions raised in a replica: typed ragserve errors are unwrapped so the ingress
maps them like local ones; anything else (a dead replica, back-pressure) becomes
``StageUnavailableError``.

A handle carries the transport of the process that made it: ``serve.run`` in a script, a test
or a notebook builds the graph in the driver, which keeps Serve's default (Ray actor calls, so
that ``.result()`` works there), while ``serve run``/``serve deploy`` build it inside the
cluster. The client re-applies the transport of the replica it runs in, so the ingress calls
its stages over gRPC in throughput mode however the graph was started (``graphs/serve_env.py``).

A call that reaches a replica which has just died (its node lost, its process killed) is sent
once more: Serve's router drops a dead replica on ``ActorDiedError`` and probes an unreachable
one again on ``ActorUnavailableError``, so the second try goes to a live replica. Every stage
method is safe to repeat (reads, and writes that replace by document id); a stream is tried
again only if it had yielded nothing. The pipeline's per-stage timeout bounds both tries. The
error does not say whether the node went or the request itself killed its replica (memory): a
request that did would take a second replica with it, which the edge's size limits
(``IngressConfig.limits``) are there to rule out.

A sampled request's W3C context rides along as the ``_otel`` keyword, and the replica's span
(``deployments/_observed.py``) is a child of the caller's current span: no client span of its
own, so a traced stage call costs one span, not two. The time a call spent between the caller
and the replica (routing, queueing, transport) is the caller's stage timing (on the ingress
span) less the replica span's duration.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.serve._private.constants import RAY_SERVE_USE_GRPC_BY_DEFAULT
from ray.serve.handle import DeploymentHandle

from ragserve.errors import RagServeError, StageUnavailableError
from ragserve.observability import tracing
from ragserve.schemas import (
    Chunk,
    EmbedderInfo,
    Filters,
    GenerationRequest,
    GenerationResult,
    InputKind,
    RerankResult,
    ScoredChunk,
)
from ragserve.security.access import Access
from ragserve.stages import STAGES, StageKind

__all__ = ["StageClient", "EmbedderClient", "RetrieverClient", "RerankerClient",
           "GeneratorClient", "QueryProcessorClient", "client_for"]


def _unwrap(exc: BaseException, stage: str) -> BaseException:
    cause = exc.cause if isinstance(exc, RayTaskError) else exc
    if isinstance(cause, RagServeError):
        return cause
    if isinstance(exc, RagServeError):
        return exc
    first_line = str(cause).splitlines()[0][:200] if str(cause) else ""
    return StageUnavailableError(f"{stage} failed: {type(cause).__name__}: {first_line}",
                                 details={"stage": stage})


REPLICA_LOST = (RayActorError, ActorUnavailableError)
"""What a call to a replica that is gone raises (``ActorDiedError`` is a ``RayActorError``)."""


def _replica_lost(exc: BaseException) -> bool:
    cause = exc.cause if isinstance(exc, RayTaskError) else exc
    return isinstance(exc, REPLICA_LOST) or isinstance(cause, REPLICA_LOST)


class StageClient:
    """Calls one stage's deployment; every role's client adds its methods on ``_call``."""

    def __init__(self, handle: DeploymentHandle, stage: str) -> None:
        # This process's choice (its environment), not the one pickled with the handle.
        self._handle = handle.options(_by_reference=not RAY_SERVE_USE_GRPC_BY_DEFAULT)
        self.stage = stage

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if tracing.recording():  # the W3C context rides along; the replica's span joins it
            kwargs["_otel"] = tracing.inject()
        try:
            return await self._remote(method, args, kwargs)
        except Exception as exc:
            raise _unwrap(exc, self.stage) from exc

    async def _remote(self, method: str, args: tuple, kwargs: dict) -> Any:
        """One call; once more when the replica it reached was lost."""
        try:
            return await getattr(self._handle, method).remote(*args, **kwargs)
        except Exception as exc:
            if not _replica_lost(exc):
                raise
            tracing.event("replica lost, tried again", {"ragserve.stage": self.stage})
            return await getattr(self._handle, method).remote(*args, **kwargs)

    async def health(self) -> dict:
        return await self._call("health")


class EmbedderClient(StageClient):
    async def embed(self, texts: list[str], kind: InputKind = "passage") -> list[list[float]]:
        return await self._call("embed", texts, kind)

    async def info(self) -> EmbedderInfo:
        return await self._call("info")


class RetrieverClient(StageClient):
    async def warm_up(self) -> None:
        """The replica warmed itself up when it started."""

    async def aclose(self) -> None:
        """The replica closes its own connection when it stops."""

    async def ensure_collection(self, embedder: EmbedderInfo) -> None:
        await self._call("ensure_collection", embedder)

    # ``access`` (tenant and groups) crosses to the retriever replica, which applies it.
    async def search(self, vector: list[float], top_k: int, filters: Filters | None = None, *,
                     query_text: str | None = None, mode: str | None = None,
                     access: Access | None = None) -> list[ScoredChunk]:
        return await self._call("search", vector, top_k, filters, query_text=query_text, mode=mode,
                                access=access)

    async def chunk_hashes_many(self, doc_ids: list[str], *,
                                access: Access | None = None) -> dict[str, dict[str, str]]:
        return await self._call("chunk_hashes_many", doc_ids, access=access)

    async def replace_documents(
            self, documents: list[tuple[str, list[Chunk], list[list[float]]]], *,
            access: Access | None = None) -> None:
        await self._call("replace_documents", documents, access=access)

    async def get_document(self, doc_id: str, *, access: Access | None = None) -> list[Chunk]:
        return await self._call("get_document", doc_id, access=access)

    async def delete_document(self, doc_id: str, *, access: Access | None = None) -> int:
        return await self._call("delete_document", doc_id, access=access)

    async def count(self) -> int:
        return await self._call("count")


class RerankerClient(StageClient):
    async def rerank(self, query: str, chunks: list[ScoredChunk], top_n: int) -> RerankResult:
        return await self._call("rerank", query, chunks, top_n)


class GeneratorClient(StageClient):
    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return await self._call("generate", request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        carrier = {"_otel": tracing.inject()} if tracing.recording() else {}
        async for item in self._stream(request, **carrier):
            yield item

    async def _stream(self, request: GenerationRequest, **carrier: Any) -> AsyncIterator[dict]:
        yielded = False
        try:
            try:
                async for item in self._handle.options(stream=True).stream.remote(
                        request, **carrier):
                    yielded = True
                    yield item
            except Exception as exc:
                if yielded or not _replica_lost(exc):
                    raise
                async for item in self._handle.options(stream=True).stream.remote(
                        request, **carrier):
                    yield item
        except Exception as exc:
            raise _unwrap(exc, self.stage) from exc


class QueryProcessorClient(StageClient):
    async def process(self, query: str) -> str:
        return await self._call("process", query)


_CLIENTS: dict[StageKind, type[StageClient]] = {
    "embedder": EmbedderClient, "retriever": RetrieverClient, "reranker": RerankerClient,
    "generator": GeneratorClient, "query": QueryProcessorClient,
}


def client_for(name: str, handle: DeploymentHandle) -> StageClient:
    """The client of stage ``name`` (by its kind in ``STAGES``)."""
    kind = next(s.kind for s in STAGES if s.name == name)
    return _CLIENTS[kind](handle, name)
