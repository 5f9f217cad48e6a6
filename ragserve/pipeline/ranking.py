"""The read path up to ranked passages: query stages → embed → retrieve → rerank.

Failure contract: the embedder and retriever are required (their failures propagate as 503);
a query stage's failure propagates too (it may be a guard: answering without it is not safe);
the reranker is optional — past its budget or failing, the retriever's order is served,
``degraded`` and with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from ragserve.config import IngressConfig
from ragserve.errors import InvalidRequestError, PayloadTooLargeError, RagServeError
from ragserve.pipeline.calls import StageCaller, Stopwatch
from ragserve.pipeline.stageset import StageSet
from ragserve.ordering import RETRIEVAL_ORDER_NAME, order_by_retrieval
from ragserve.schemas import ScoredChunk, SearchRequest, StageBackends, StageTimings
from ragserve.text import query_fingerprint, sanitize_query

__all__ = ["Ranking", "Ranker", "clean_query"]

log = logging.getLogger("ragserve.pipeline")


@dataclass
class Ranking:
    """What the read path found for one question."""

    question: str
    """The question as asked, cleaned (what the generator answers)."""
    search_text: str
    """What was retrieved with: the question after query stages, with earlier turns."""
    chunks: list[ScoredChunk]
    timings: StageTimings = field(default_factory=StageTimings)
    backends: StageBackends = field(default_factory=StageBackends)
    degraded: bool = False
    warnings: list[str] = field(default_factory=list)


def clean_query(query: str, max_chars: int) -> str:
    """The query with control characters removed; ``PayloadTooLargeError`` (413, a size
    limit) when it is too long, ``InvalidRequestError`` when nothing is left."""
    if len(query) > max_chars:
        raise PayloadTooLargeError(f"query is {len(query)} characters; the limit is {max_chars}",
                                   details={"limit": max_chars, "size": len(query)})
    cleaned = sanitize_query(query)
    if not cleaned:
        raise InvalidRequestError("query is empty after removing control characters")
    return cleaned


class _PassThroughProbe:
    """Whether the reranker stage would only keep the retriever's order (its ``retrieval``
    fallback: no cross-encoder configured or loadable), so a request can skip that hop.

    Asked in the background, never on a request's path: at most once per ``ttl_s``, and until
    the first answer (or after a failed probe) requests call the reranker as usual. A reranker
    redeployed with a model is seen within ``ttl_s``."""

    def __init__(self, reranker, ttl_s: float = 10.0) -> None:
        self._reranker = reranker
        self._ttl_s = ttl_s
        self._value = False
        self._checked_at = float("-inf")
        self._task: asyncio.Task | None = None

    def passthrough(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= self._ttl_s and (self._task is None or self._task.done()):
            self._checked_at = now
            self._task = asyncio.get_running_loop().create_task(self._probe())
        return self._value

    async def _probe(self) -> None:
        try:
            health = await asyncio.wait_for(self._reranker.health(), timeout=5.0)
            self._value = (health or {}).get("backend") == RETRIEVAL_ORDER_NAME
        except Exception:  # noqa: BLE001 - unknown: call the stage, which has its own fallbacks
            self._value = False


class Ranker:
    def __init__(self, stages: StageSet, config: IngressConfig, caller: StageCaller) -> None:
        self.stages = stages
        self.config = config
        self.caller = caller
        self.embedder_model: str | None = None
        self.retriever_name: str | None = None
        self._probe = _PassThroughProbe(stages.reranker)

    def _search_text(self, query: str, history: list[tuple[str, str]]) -> str:
        """A follow-up's retrieval query: the last ``retrieval_turns`` questions of the session,
        then this one ("and how do I scale it?" alone retrieves nothing useful)."""
        turns = self.config.cache.sessions.retrieval_turns
        earlier = [q for q, _ in history[-turns:]] if turns else []
        return " ".join([*earlier, query])[-self.config.limits.max_query_chars:]

    async def rank(self, req: SearchRequest, history: list[tuple[str, str]] | None = None,
                   watch: Stopwatch | None = None) -> Ranking:
        """Rank passages for ``req``. ``watch`` (started by a caller that times more than the
        ranking, such as an answer) receives the stage timings; ``total_ms`` is left to it."""
        question = clean_query(req.query, self.config.limits.max_query_chars)
        own_watch = watch is None
        watch = watch or Stopwatch(StageTimings())
        r = Ranking(question=question, search_text=question, chunks=[], timings=watch.timings)
        call, s = self.caller.call, self.stages

        text = question
        for name, processor in s.query.items():
            with watch.stage(name):
                text = await call(name, processor.process(text))
        query = self._search_text(text, history) if history else text
        r.search_text = query

        embedder = s.name_of("embedder")
        with watch.stage(embedder):
            vectors = await call(embedder, s.embedder.embed([query], "query"))
        setattr(r.backends, embedder, self.embedder_model)

        retriever = s.name_of("retriever")
        with watch.stage(retriever):
            candidates = await call(retriever, s.retriever.search(
                vectors[0], req.top_k, req.filters, query_text=query, mode=req.mode))
        setattr(r.backends, retriever, self.retriever_name)
        if req.filters and not candidates:
            # Said for any index: knowing which fields exist would cost a scan on a server.
            r.warnings.append(
                "no stored passage matched the filters on "
                f"{', '.join(sorted(req.filters))}: a field no stored document has, or a value "
                "none has, matches nothing (field names are case-sensitive)")

        r.chunks = candidates[: req.rerank_top_n]
        if candidates:
            await self._rerank(r, candidates, req.rerank_top_n, watch)
        if own_watch:
            watch.finish()
        return r

    async def _rerank(self, r: Ranking, candidates: list[ScoredChunk], top_n: int,
                      watch: Stopwatch) -> None:
        reranker = self.stages.name_of("reranker")
        if self._probe.passthrough():
            # The reranker would only keep the retriever's order: skip its hop.
            r.chunks = order_by_retrieval(candidates, top_n)
            setattr(r.backends, reranker, RETRIEVAL_ORDER_NAME)
            return
        with watch.stage(reranker):
            try:
                result = await self.caller.call(
                    reranker, self.stages.reranker.rerank(r.search_text, candidates, top_n))
            except RagServeError as exc:
                r.degraded = True
                setattr(r.backends, reranker, "retrieval-order")
                r.warnings.append(
                    f"reranker unavailable, kept the retriever's order: {exc.message}")
                log.warning("reranker failed (%s); query=%s", exc.code,
                            query_fingerprint(r.search_text))
                return
        r.chunks = result.chunks
        setattr(r.backends, reranker, result.backend)
        r.degraded = r.degraded or result.degraded
