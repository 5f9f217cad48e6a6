"""The answer core: one flow behind streamed and non-streamed answers.

``AnswerCore.run`` ranks passages, asks the generator (``generate``, or ``stream`` when tokens
are wanted as they come) and builds one ``QueryResponse`` either way, so both kinds of answer
use the same wording, warnings, citations and timings.

Failure contract: ranking failures propagate (503 / 422); a generator that cannot answer gives
the ranked passages without an answer, ``degraded`` and with a warning (an invalid generation
request is the client's error and propagates); an answer from a fallback backend, after an
earlier one failed or was skipped, is ``degraded`` too and says which and why.
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator

from ragserve.errors import InvalidRequestError, RagServeError, StageUnavailableError
from ragserve.generation.base import Generator
from ragserve.generation.prompt import NO_PASSAGES_ANSWER
from ragserve.pipeline.calls import StageCaller, Stopwatch, describe
from ragserve.pipeline.ranking import Ranker, Ranking
from ragserve.schemas import (
    Citation,
    GenerationRequest,
    GenerationResult,
    QueryRequest,
    QueryResponse,
    ScoredChunk,
    StageTimings,
    Usage,
)
from ragserve.text import query_fingerprint

__all__ = ["AnswerCore", "NO_PASSAGES_ANSWER", "citation", "stream_done_event"]

log = logging.getLogger("ragserve.pipeline")



class AnswerCore:
    def __init__(self, ranker: Ranker, generator: Generator, caller: StageCaller,
                 name: str = "generator") -> None:
        self.ranker = ranker
        self.generator = generator
        self.caller = caller
        self.name = name

    async def run(self, req: QueryRequest, history: list[tuple[str, str]], *,
                  stream: bool) -> AsyncIterator[tuple[str, Any]]:
        """Yield ``("meta", Ranking)``, then ``("token", str)`` while streaming, then
        ``("done", QueryResponse)``."""
        watch = Stopwatch(StageTimings())
        ranking = await self.ranker.rank(req, history, watch)
        yield "meta", ranking
        if not ranking.chunks:
            watch.finish()
            yield "done", _response(ranking, NO_PASSAGES_ANSWER, [])
            return
        gen_req = GenerationRequest(query=ranking.question, passages=ranking.chunks,
                                    max_tokens=req.max_tokens, history=history)
        result: GenerationResult | None = None
        failure: RagServeError | None = None
        with watch.stage(self.name):
            try:
                if stream:
                    async for item in self.generator.stream(gen_req):
                        if "delta" in item:
                            watch.first_token()
                            yield "token", item["delta"]
                        elif "result" in item:
                            result = item["result"]
                else:
                    asked = watch.elapsed_ms()
                    result = await self.caller.call(self.name, self.generator.generate(gen_req))
                    if result.first_token_ms is not None:  # the generator's own clock
                        watch.timings.first_token_ms = round(asked + result.first_token_ms, 2)
            except InvalidRequestError:
                raise
            except RagServeError as exc:
                failure = exc
            except Exception as exc:  # a stage client's stream broke mid-way
                failure = StageUnavailableError(f"{self.name} is unavailable: {describe(exc)}")
        if result is None and failure is None:
            failure = StageUnavailableError(f"{self.name} ended its answer without a result")
        watch.finish()
        if failure is not None:
            log.warning("generator failed (%s); query=%s", failure.code,
                        query_fingerprint(ranking.question))
            ranking.degraded = True
            ranking.warnings.append(
                f"generator unavailable, returning passages only: {failure.message}")
            yield "done", _response(
                ranking, "", _numbered(ranking.chunks, []),
                generation=(failure.details or {}).get("attempts", []))
            return
        setattr(ranking.backends, self.name, result.backend)
        ranking.warnings.extend(result.warnings)
        ungrounded = [a for a in result.attempts if a.outcome == "ungrounded"]
        passed_over = [a for a in result.attempts if a.outcome not in ("ok", "ungrounded")]
        if ungrounded:
            # Never an unsupported answer presented as grounded: the passages' own sentences.
            ranking.degraded = True
            ranking.warnings.append(
                f"the {ungrounded[0].backend} answer was not supported by the passages "
                f"({ungrounded[0].reason}); answered with {result.backend} sentences from "
                "the passages instead")
        elif result.unsupported_sentences:
            ranking.warnings.append(
                f"{result.unsupported_sentences} sentence(s) of the answer were not supported "
                "by the passages and were left out")
        if passed_over:
            # A fallback answered: the answer is not the one the configuration asked for.
            ranking.degraded = True
            ranking.warnings.append(
                f"answered by fallback {result.backend}: " + "; ".join(
                    f"{a.backend} {a.outcome} ({a.reason or 'no reason'})" for a in passed_over))
        if result.passages_dropped:
            ranking.warnings.append(
                f"{result.passages_dropped} passage(s) did not fit the context window")
        yield "done", _response(
            ranking, result.text, _numbered(ranking.chunks[: result.passages_used], result.cited),
            usage=result.usage, generation=result.attempts, route=result.route,
            finish_reason=result.finish_reason)


def _response(r: Ranking, answer: str, citations: list[Citation], **extra: Any) -> QueryResponse:
    return QueryResponse(answer=answer, citations=citations, usage=extra.pop("usage", Usage()),
                         timings=r.timings, backends=r.backends, degraded=r.degraded,
                         warnings=r.warnings, **extra)


def citation(number: int, chunk: ScoredChunk, cited: bool = False) -> Citation:
    return Citation(number=number, doc_id=chunk.doc_id, chunk_id=chunk.chunk_id, text=chunk.text,
                    score=chunk.score, metadata=chunk.metadata, cited=cited)


def _numbered(chunks: list[ScoredChunk], cited: list[int]) -> list[Citation]:
    marks = set(cited)
    return [citation(i + 1, c, cited=(i + 1) in marks) for i, c in enumerate(chunks)]


def stream_done_event(resp: QueryResponse) -> dict:
    """The ``done`` event of a streamed answer: the whole response, exactly as the same
    request gets it unstreamed (the ``meta`` event listed the candidates before the generator
    chose what fits its window; ``citations`` here are the passages it was given), plus the
    numbers cited and how many passages were used."""
    return {
        **resp.model_dump(mode="json"),
        "cited": [c.number for c in resp.citations if c.cited],
        "passages_used": len(resp.citations),
    }
