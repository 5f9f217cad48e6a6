"""The query-result tier, request de-duplication and sessions, around a ``RAGPipeline``.

``CachedPipeline`` offers the pipeline's methods, so the HTTP API and the ingress deployment use
it in its place. Per request:

1. the session's earlier turns are read (``session_id``), and given to the pipeline;
2. the query key is a hash of the normalised query, every parameter that changes the result,
   the pipeline's fingerprint (models, generator, prompt version), the session's turns and the
   **index version**, which every ingest and delete advances: a stale answer is never read
   after the corpus changed;
3. a hit is returned at once; on a miss, identical concurrent requests in this replica share one
   computation (single-flight), and across replicas a short-lived lock in the store makes the
   others wait for the first one's result instead of computing it again;
4. only complete answers are stored (never a degraded one).

If the index version cannot be advanced (the store is down during an ingest), this replica
bypasses the query cache until it can, so it never serves an answer older than its own writes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, TypeVar

from pydantic import BaseModel

from ragserve.cache.keys import KeySpace, digest, normalise_text
from ragserve.cache.sessions import SessionStore
from ragserve.cache.stats import CacheCounters, begin_request, current_request, end_request
from ragserve.cache.store import GuardedStore
from ragserve.config import CacheConfig
from ragserve.schemas import (
    CacheInfo,
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
    StageTimings,
)
from ragserve.text import sanitize_query

if TYPE_CHECKING:
    from ragserve.pipeline import RAGPipeline

__all__ = ["CachedPipeline", "PROMPT_VERSION"]

log = logging.getLogger("ragserve.cache")
R = TypeVar("R", bound=BaseModel)

# Part of every query key: bump when prompts or answer post-processing change behaviour.
PROMPT_VERSION = "3"  # 2: passages delimited as untrusted data, control tokens defused;
# 3: answers held to their passages (grounding), evidence selection


class CachedPipeline:
    """A ``RagService`` around a ``RAGPipeline``: the query tier, de-duplication, sessions."""

    def __init__(self, pipeline: "RAGPipeline", *, config: CacheConfig, store: GuardedStore,
                 keys: KeySpace, counters: CacheCounters, sessions: SessionStore | None,
                 fingerprint: str = "") -> None:
        self.pipeline = pipeline
        self.config = config
        self.store = store
        self.keys = keys
        self.counters = counters
        self.sessions = sessions
        self.fingerprint = fingerprint
        self._inflight: dict[str, asyncio.Task] = {}
        self._version_stale = False  # an index-version bump is owed to the store

    # ------------------------------------------------------------------ pass-through

    async def startup(self) -> None:
        await self.pipeline.startup()

    async def get_document(self, doc_id: str) -> DocumentChunks:
        return await self.pipeline.get_document(doc_id)

    async def embed(self, req: EmbeddingsRequest) -> EmbeddingsResponse:
        stats, token = begin_request()
        try:
            resp = await self.pipeline.embed(req)
            return resp.model_copy(update={"cache": stats.info.model_copy()})
        finally:
            end_request(token)

    async def rerank(self, req: RerankRequest) -> RerankResponse:
        return await self.pipeline.rerank(req)

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        ready, stages = await self.pipeline.readiness()
        if self.store.backend != "memory" and self.store.available:
            await self.store.ping()  # probe, so the detail below is current
        # The cache never makes the service unready: without it requests are slower, not failed.
        stages["cache"] = {"ready": True, **self.health()}
        return ready, stages

    def health(self) -> dict[str, Any]:
        return {
            **self.store.health(),
            "tiers": self.counters.as_dict(),
            "query_cache": self.config.queries.enabled,
            "index_version_pending": self._version_stale,
            "sessions_in_memory": len(self.sessions) if self.sessions is not None else 0,
        }

    # ------------------------------------------------------------------ reads

    async def search(self, req: SearchRequest) -> SearchResponse:
        stats, token = begin_request()
        try:
            resp = await self._cached("search", req, [], lambda: self.pipeline.search(req),
                                      SearchResponse)
            return resp.model_copy(update={"cache": stats.info.model_copy()})
        finally:
            end_request(token)

    async def query(self, req: QueryRequest, *,
                    history: list[tuple[str, str]] | None = None) -> QueryResponse:
        """``history``: explicit earlier turns (an OpenAI ``messages`` list); they replace the
        session's and are keyed into the query cache the same way."""
        stats, token = begin_request()
        try:
            history = await self._history(req.session_id, history)
            resp = await self._cached(
                "query", req, history,
                lambda: self.pipeline.query(req, history=history), QueryResponse)
            if req.session_id and resp.answer and self.sessions is not None:
                await self.sessions.append(req.session_id, sanitize_query(req.query), resp.answer)
            return resp.model_copy(update={"cache": stats.info.model_copy()})
        finally:
            end_request(token)

    async def query_events(self, req: QueryRequest, *,
                           history: list[tuple[str, str]] | None = None,
                           ) -> AsyncIterator[tuple[str, dict]]:
        """Streams are never served from the query cache (tokens arrive as they are made), but
        they use and extend the session."""
        history = await self._history(req.session_id, history)
        info = CacheInfo(query="bypass", session_turns=len(history))
        async for event, data in self.pipeline.query_events(req, history=history):
            if event == "done":
                if req.session_id and data.get("answer") and self.sessions is not None:
                    await self.sessions.append(req.session_id, sanitize_query(req.query),
                                               data["answer"])
                data = {**data, "cache": info.model_dump()}
            yield event, data

    async def _history(self, session_id: str | None,
                       explicit: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
        if explicit is not None:
            current = current_request()
            if current is not None:
                current.info.session_turns = len(explicit)
            return [(q, a) for q, a in explicit]
        if not session_id or self.sessions is None:
            return []
        return await self.sessions.get(session_id)

    # ------------------------------------------------------------------ writes

    async def ingest(self, req: IngestRequest) -> IngestResponse:
        stats, token = begin_request()
        try:
            try:
                resp = await self.pipeline.ingest(req)
            except BaseException:
                await self._advance_index_version()  # a failed write may have changed a part
                raise
            if any(d.status != "unchanged" for d in resp.documents):
                await self._advance_index_version()
            return resp.model_copy(update={"cache": stats.info.model_copy()})
        finally:
            end_request(token)

    async def delete_document(self, doc_id: str) -> DeleteResponse:
        try:
            return await self.pipeline.delete_document(doc_id)
        finally:
            await self._advance_index_version()

    async def _advance_index_version(self) -> None:
        version = await self.store.incr(self.keys.index_version)
        self._version_stale = version is None
        if version is None:
            log.warning("could not advance the index version; query cache bypassed until it can")

    # ------------------------------------------------------------------ the query tier

    async def _query_key(self, kind: str, req: SearchRequest,
                         history: list[tuple[str, str]]) -> str | None:
        """The key, or None when the cache cannot be trusted or reached right now."""
        if not self.config.queries.enabled:
            return None
        if self._version_stale:
            await self._advance_index_version()
            if self._version_stale:
                return None
        ok, raw = await self.store.get_checked(self.keys.index_version)
        if not ok:
            return None
        params = req.model_dump(exclude={"query", "stream", "session_id"}, mode="json")
        return self.keys.query({
            "kind": kind,
            "query": digest(normalise_text(sanitize_query(req.query))),
            "params": params,
            "history": digest(history) if history else "",
            "pipeline": self.fingerprint,
            "prompt": PROMPT_VERSION,
            "index": (raw or b"0").decode(),
        })

    async def _cached(self, kind: str, req: SearchRequest, history: list[tuple[str, str]],
                      compute: Callable[[], Awaitable[R]], model: type[R]) -> R:
        info = current_request().info
        key = await self._query_key(kind, req, history)
        if key is None:
            info.query = "bypass" if self.config.queries.enabled else "off"
            return await compute()
        tier = self.counters.tiers["queries"]
        started = time.perf_counter()
        raw = await self.store.get(key)
        if raw is not None:
            try:
                resp = model.model_validate_json(raw)
            except ValueError:
                resp = None  # written by an incompatible version: recompute
            if resp is not None:
                tier.hits += 1
                info.query = "hit"
                # this request's own timings: no stage ran, only the cache read
                elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
                return resp.model_copy(update={"timings": StageTimings(total_ms=elapsed_ms)})
        tier.misses += 1
        info.query = "miss"
        if not self.config.dedup.enabled:
            return await self._compute_and_store(key, compute, model)
        task = self._inflight.get(key)
        if task is not None:
            self.counters.deduplicated += 1
            info.query = "deduplicated"
            return await asyncio.shield(task)
        task = asyncio.ensure_future(self._compute_and_store(key, compute, model))
        self._inflight[key] = task
        task.add_done_callback(lambda _t, key=key: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    async def _compute_and_store(self, key: str, compute: Callable[[], Awaitable[R]],
                                 model: type[R]) -> R:
        lock_key, owner = None, None
        if self.config.dedup.enabled and self.store.backend != "memory":
            lock_key, owner = self.keys.lock(key), secrets.token_hex(8)
            got = await self.store.set(lock_key, owner.encode(), self.config.dedup.lock_ttl_s,
                                       nx=True)
            if got is False:  # another replica is computing this very request
                resp = await self._wait_for(key, lock_key, model)
                if resp is not None:
                    self.counters.deduplicated += 1
                    current_request().info.query = "deduplicated"
                    return resp
                got = await self.store.set(lock_key, owner.encode(),
                                           self.config.dedup.lock_ttl_s, nx=True)
            if not got:
                lock_key = None  # not ours (or no store): nothing to release
        try:
            resp = await compute()
            if _cacheable(resp):
                payload = resp.model_copy(update={"cache": None}).model_dump_json()
                await self.store.set(key, payload.encode(), self.config.queries.ttl_s)
            return resp
        finally:
            if lock_key is not None:
                await self.store.delete_if_equals(lock_key, owner.encode())

    async def _wait_for(self, key: str, lock_key: str, model: type[R]) -> R | None:
        """Wait for another replica's result; None if its lock went away without one."""
        deadline = time.monotonic() + self.config.dedup.lock_ttl_s
        while time.monotonic() < deadline:
            await asyncio.sleep(self.config.dedup.poll_interval_s)
            raw = await self.store.get(key)
            if raw is not None:
                try:
                    return model.model_validate_json(raw)
                except ValueError:
                    return None
            ok, holder = await self.store.get_checked(lock_key)
            if not ok or holder is None:
                return None
        return None


def _cacheable(resp: BaseModel) -> bool:
    if getattr(resp, "degraded", False):
        return False
    if isinstance(resp, QueryResponse) and not resp.answer:
        return False
    return True
