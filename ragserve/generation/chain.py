"""Generator routing: an ordered chain of backends with retries, a breaker per backend and an
optional cheaper backend for simple queries.

For each backend in order (the simple backend first when the router calls the query simple):
- skipped at once while its circuit breaker is open (or it failed to load);
- while its breaker is half-open, skipped too: the one trial call runs in the background
  (the request's own prompt, ``max_tokens=1``, bounded by the backend's ``timeout_s``) and
  closes or re-opens the breaker, so no user waits on a backend that may still hang;
- each call bounded by the backend's ``timeout_s`` and by its share of ``deadline_s``: the
  deadline is shared, and every later backend that may still answer (loaded, breaker not
  open) keeps a reserve of its own ``timeout_s`` (at most an equal share of what is left),
  so a hung primary can never use up the time the extractive fallback needs;
- connection errors, 5xx and 429 retried up to ``retry.max_attempts`` tries in all, with
  full-jitter exponential backoff, waiting at least the server's ``Retry-After`` (one longer
  than ``retry.max_retry_after_s`` moves on instead); a try that *timed out* is not retried
  unless ``retry.retry_timeouts`` (a hung server hangs again, and each try costs a whole
  timeout): the next backend answers instead;
- any other failure moves on to the next backend at once.

The result says which backend answered and what happened to each one before it
(``GenerationResult.attempts``). When every backend fails, ``StageUnavailableError`` carries the
same list; the pipeline then answers with the passages only, flagged ``degraded``.

A stream falls back only until its first token: after that the answer is committed to one
backend, and a failure ends the stream (the pipeline flags it ``degraded``).

Every model answer is then held to its passages (``GeneratorConfig.grounding``, see
``ragserve.generation.grounding``): unsupported sentences are dropped, and an answer with none
left is replaced by the extractive answer, its attempt recorded as ``ungrounded``. A stream
releases sentences only once they are checked, so streamed and whole answers agree. An answer
whose first ``grounding.stop_after_unsupported`` claims are all unsupported is stopped there
(a whole answer is read from the backend's stream for this; closing the stream cancels the
decoding) and replaced at once: on a small CPU model most replaced answers used to run to
``max_tokens`` first.

With ``GeneratorConfig.evidence.model`` set, the chain scores every unit of every passage
against the question once per request (``evidence.SemanticEvidenceScorer``, in a worker
thread) and hands the scores to every backend it tries (``GenerationRequest.evidence_scores``):
the model's evidence and the extractive answer's sentences are then chosen by meaning as well
as by shared words. A scorer that fails to load or to score leaves the lexical scores: the
answer is chosen less well, never refused.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from ragserve.config import GeneratorConfig
from ragserve.errors import InvalidRequestError, StageTimeoutError, StageUnavailableError
from ragserve.generation.evidence import SemanticEvidenceScorer
from ragserve.generation.grounding import SentenceGate
from ragserve.generation.prompt import extract_citations
from ragserve.generation.routing import ComplexityRouter
from ragserve.passages import read_units
from ragserve.resilience.breaker import BreakerState, CircuitBreaker
from ragserve.resilience.retry import backoff_s, describe_failure, is_transient, retry_after_s
from ragserve.schemas import (
    GenerationAttempt,
    GenerationRequest,
    GenerationResult,
    ScoredChunk,
    Usage,
)

__all__ = ["FallbackGenerator", "ChainMember"]

log = logging.getLogger("ragserve.generation")


class ChainMember:
    def __init__(self, backend: Any, timeout_s: float, breaker: CircuitBreaker) -> None:
        self.backend = backend
        self.name: str = backend.name
        self.timeout_s = timeout_s
        self.breaker = breaker
        self.load_error: str | None = None
        self.calls = 0
        self.failures = 0
        self.last_failure: str | None = None
        self.probes = 0

    @property
    def up(self) -> bool:
        """Loaded, and its breaker lets requests through (closed)."""
        return self.load_error is None and self.breaker.state is BreakerState.closed

    def may_answer(self) -> bool:
        """Could take part in a request now (loaded, breaker not open): what a reserve is
        kept for. Does not take the half-open trial slot."""
        return self.load_error is None and self.breaker.state is not BreakerState.open

    def snapshot(self) -> dict:
        return {"backend": self.name, "timeout_s": self.timeout_s, "calls": self.calls,
                "failures": self.failures, "breaker": self.breaker.snapshot(),
                **({"load_error": self.load_error} if self.load_error else {})}

    def status(self, role: str) -> dict:
        """The per-backend line of ``/readyz``."""
        state = self.breaker.state
        return {"role": role,
                "up": self.up,
                "state": ("not_loaded" if self.load_error is not None else
                          {"closed": "up", "open": "down", "half_open": "probing"}[state.value]),
                "breaker": state.value,
                "last_failure": self.last_failure,
                **({"load_error": self.load_error} if self.load_error else {})}


class _Failed(Exception):
    """One backend gave up (after its retries); carries the attempt record."""

    def __init__(self, attempt: GenerationAttempt) -> None:
        self.attempt = attempt


class FallbackGenerator:
    def __init__(self, config: GeneratorConfig, members: list[ChainMember],
                 simple: ChainMember | None = None, *,
                 grounded_fallback: Any | None = None,
                 evidence_scorer: SemanticEvidenceScorer | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None) -> None:
        if not members:
            raise ValueError("a generator chain needs at least one backend")
        self.config = config
        self.members = members
        self.simple = simple
        # answers when a model's answer has no supported sentence (None: grounding off)
        self.grounded_fallback = grounded_fallback if config.grounding.enabled else None
        self.name = members[0].name
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._probes: set[asyncio.Task] = set()  # half-open trials running in the background
        self.router = (ComplexityRouter(config.routing, members[0].backend.count_tokens)
                       if config.routing is not None and simple is not None else None)
        self.evidence_scorer = evidence_scorer
        self.evidence_error: str | None = None  # why the scorer is not used, if it is not

    @classmethod
    def from_backends(cls, config: GeneratorConfig, backends: list[Any],
                      simple: Any | None = None, **kw: Any) -> "FallbackGenerator":
        """``backends``: built from ``[config.backend, *config.fallbacks]``, in that order."""
        configs = [config.backend, *config.fallbacks]
        breaker = config.breaker
        clock = kw.get("clock", time.monotonic)

        def member(backend: Any, cfg: Any) -> ChainMember:
            return ChainMember(backend, cfg.timeout_s,
                               CircuitBreaker(f"generator:{backend.name}", breaker, clock=clock))

        members = [member(b, c) for b, c in zip(backends, configs)]
        simple_member = (member(simple, config.routing.simple_backend)
                         if simple is not None and config.routing is not None else None)
        return cls(config, members, simple_member, **kw)

    # ------------------------------------------------------------------ lifecycle

    def _all(self) -> list[ChainMember]:
        return ([self.simple] if self.simple else []) + self.members

    def warm_up(self) -> None:
        """Load every backend. One that fails to load is skipped while others can answer;
        only when none loads does this raise (Serve then replaces the replica)."""
        if self.grounded_fallback is not None:
            self.grounded_fallback.warm_up()
        if self.evidence_scorer is not None:
            try:
                self.evidence_scorer.warm_up()
            except Exception as exc:  # lexical scores still choose the evidence
                self.evidence_error = f"{type(exc).__name__}: {str(exc)[:300]}"
                log.error("evidence scorer %s failed to load: %s", self.evidence_scorer.name,
                          self.evidence_error)
                self.evidence_scorer = None
        for m in self._all():
            try:
                m.backend.warm_up()
            except Exception as exc:
                m.load_error = f"{type(exc).__name__}: {str(exc)[:300]}"
                log.error("generator backend %s failed to load: %s", m.name, m.load_error)
        if all(m.load_error for m in self._all()):
            raise StageUnavailableError(
                "no generator backend could be loaded: "
                + "; ".join(f"{m.name}: {m.load_error}" for m in self._all()))

    def count_tokens(self, text: str) -> int:
        return self.members[0].backend.count_tokens(text)

    def health(self) -> dict:
        """``status``: ``ok`` (the primary is up), ``degraded`` (the primary is down or
        probing and a fallback can answer) or ``down`` (no backend can answer: answers are
        passages only); ``backends``: per backend, its role, whether it is ``up`` and its
        breaker (``state``: up, down, probing, not_loaded); ``chain``: the counters."""
        backends: dict[str, dict] = {}
        roles = ([("simple", self.simple)] if self.simple else []) + [
            ("primary" if i == 0 else f"fallback {i}", m) for i, m in enumerate(self.members)]
        for role, m in roles:
            key, n = m.name, 2
            while key in backends:
                key, n = f"{m.name}#{n}", n + 1
            backends[key] = m.status(role)
        primary = self.members[0]
        status = ("ok" if primary.up else
                  "degraded" if any(m.may_answer() for m in self.members[1:]) else "down")
        return {
            "status": status,
            "backends": backends,
            "open_breakers": [k for k, b in backends.items() if b["breaker"] != "closed"],
            "chain": [m.snapshot() for m in self.members],
            **({"simple": self.simple.snapshot()} if self.simple else {}),
            **({"routes": dict(self.router.counts)} if self.router else {}),
            **({"evidence_scorer": self._scorer_health()}
               if self.config.evidence.model is not None else {}),
        }

    def _scorer_health(self) -> dict:
        """The configured evidence scorer: loaded and in use, or why not."""
        if self.evidence_scorer is not None:
            return {**self.evidence_scorer.health(), "error": None}
        return {"model": self.config.evidence.model.model, "loaded": False,
                "error": self.evidence_error}

    async def _with_evidence(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` with its units' semantic scores, when the chain has a scorer."""
        scorer = self.evidence_scorer
        if scorer is None or not request.passages or request.evidence_scores is not None:
            return request
        units = [[u.text for u in read_units(p.text)[0]] for p in request.passages]
        try:
            scores = await asyncio.to_thread(scorer.scores, request.query, units)
        except Exception as exc:  # lexical scores still choose the evidence
            log.warning("evidence scoring failed (%s); lexical scores only",
                        type(exc).__name__)
            return request
        return request.model_copy(update={"evidence_scores": scores})

    def healthy(self) -> bool:
        """False when no backend can be tried at all (all failed to load)."""
        return any(m.load_error is None for m in self._all())

    async def aclose(self) -> None:
        for task in list(self._probes):
            task.cancel()
        for m in self._all():
            await m.backend.aclose()

    # ------------------------------------------------------------------ routing

    def _plan(self, request: GenerationRequest) -> tuple[list[ChainMember], str | None]:
        if self.router is None:
            return list(self.members), None
        route, reason = self.router.route(request)
        log.debug("route %s (%s)", route, reason)
        return ([self.simple] if route == "simple" else []) + list(self.members), route

    def _usable(self, m: ChainMember, attempts: list[GenerationAttempt],
                request: GenerationRequest) -> bool:
        """Whether ``m`` may be tried now; if not, record why it was skipped. A half-open
        breaker's trial runs in the background (``_probe``): the request moves on."""
        state = m.breaker.state
        if m.load_error is not None:
            skip: str | None = "not loaded"
        elif state is BreakerState.closed:
            skip = None
        elif state is BreakerState.half_open:
            if m.breaker.allow():
                self._probe(m, request)
            skip = "circuit half-open, probing"
        else:
            skip = "circuit open"
        if skip is not None:
            attempts.append(GenerationAttempt(backend=m.name, outcome="skipped", reason=skip))
        return skip is None

    def _probe(self, m: ChainMember, request: GenerationRequest) -> None:
        """The half-open trial, off every request's path: the request's own prompt with
        ``max_tokens=1``, bounded as a request's try is (``first_token_timeout_s``, then
        ``m.timeout_s``); closes or re-opens the breaker."""
        trial = request.model_copy(update={"max_tokens": 1})

        async def run() -> None:
            m.probes += 1
            m.calls += 1
            try:
                if self.config.first_token_timeout_s is not None:
                    await self._generate_streamed(m, trial, m.timeout_s)
                else:
                    await asyncio.wait_for(m.backend.generate(trial), m.timeout_s)
            except asyncio.CancelledError:
                m.breaker.record_cancelled()
                raise
            except InvalidRequestError:
                m.breaker.record_cancelled()  # says nothing about the backend's health
            except Exception as exc:
                m.failures += 1
                m.last_failure = ("timeout" if isinstance(exc, asyncio.TimeoutError)
                                  else describe_failure(exc))
                m.breaker.record_failure()
                log.warning("generator %s: half-open probe failed (%s); open again",
                            m.name, m.last_failure)
            else:
                m.breaker.record_success()
                m.last_failure = None
                log.info("generator %s: half-open probe answered; breaker closed", m.name)

        task = asyncio.get_running_loop().create_task(run(), name=f"probe:{m.name}")
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    def _share_end(self, later: list[ChainMember], deadline: float) -> float:
        """When ``m``'s part of the shared deadline ends: every later backend that may still
        answer keeps its ``timeout_s`` in reserve, or an equal share of what is left when
        the reserves do not fit."""
        reserving = [x for x in later if x.may_answer()]
        if not reserving:
            return deadline
        now = self._clock()
        remaining = deadline - now
        reserve = sum(x.timeout_s for x in reserving)
        return now + max(remaining - reserve, remaining / (len(reserving) + 1))

    # ------------------------------------------------------------------ one backend

    async def _call(self, m: ChainMember, deadline: float,
                    call: Callable[[float], Awaitable[Any]]) -> tuple[Any, GenerationAttempt]:
        """Try ``m`` with retries. The breaker already allowed the first try."""
        started = self._clock()
        tries = 0
        while True:
            tries += 1
            remaining = deadline - self._clock()
            if remaining <= 0:
                m.breaker.record_cancelled()
                raise _Failed(self._attempt(m, "failed", "deadline", tries - 1, started))
            m.calls += 1
            try:
                result = await call(min(m.timeout_s, remaining))
            except InvalidRequestError:
                m.breaker.record_cancelled()
                raise  # the request itself is wrong: no backend would do better
            except asyncio.CancelledError:
                m.breaker.record_cancelled()
                raise
            except Exception as exc:
                m.failures += 1
                m.breaker.record_failure()
                reason = describe_failure(exc)
                m.last_failure = reason
                log.warning("generator %s failed (%s), try %d", m.name, reason, tries)
                timed_out = reason == "timeout"
                if (tries >= self.config.retry.max_attempts or not is_transient(exc)
                        or (timed_out and not self.config.retry.retry_timeouts)
                        or m.breaker.state is BreakerState.open):
                    raise _Failed(self._attempt(m, "failed", reason, tries, started)) from exc
                wait = backoff_s(tries, self.config.retry, self._rng)
                server_wait = retry_after_s(exc)
                if server_wait is not None:
                    if server_wait > self.config.retry.max_retry_after_s:
                        raise _Failed(self._attempt(
                            m, "failed", f"{reason}, retry after {server_wait:g}s", tries,
                            started)) from exc
                    wait = max(wait, server_wait)
                if self._clock() + wait >= deadline:
                    raise _Failed(self._attempt(m, "failed", f"{reason}, no time to retry",
                                                tries, started)) from exc
                await self._sleep(wait)
                if not m.breaker.allow():  # another request tripped it meanwhile
                    raise _Failed(self._attempt(m, "failed", f"{reason}, circuit open",
                                                tries, started)) from exc
                continue
            m.breaker.record_success()
            m.last_failure = None
            return result, self._attempt(m, "ok", None, tries, started)

    def _attempt(self, m: ChainMember, outcome: str, reason: str | None, tries: int,
                 started: float) -> GenerationAttempt:
        return GenerationAttempt(backend=m.name, outcome=outcome, reason=reason, tries=tries,
                                 elapsed_ms=round((self._clock() - started) * 1000, 2))

    def _exhausted(self, attempts: list[GenerationAttempt]) -> StageUnavailableError:
        summary = ", ".join(f"{a.backend} ({a.reason})" for a in attempts)
        return StageUnavailableError(
            f"every generator backend failed: {summary}",
            details={"attempts": [a.model_dump() for a in attempts]},
        )

    # ------------------------------------------------------------------ generation

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        members, route = self._plan(request)
        started = self._clock()
        request = await self._with_evidence(request)
        deadline = started + self.config.deadline_s
        attempts: list[GenerationAttempt] = []
        for i, m in enumerate(members):
            if not self._usable(m, attempts, request):
                continue
            until = self._share_end(members[i + 1:], deadline)
            try_started = [started]  # when the last try of ``m`` began
            # A gate per try, fed as the answer streams in when an answer may be stopped early.
            early = self.config.grounding.stop_after_unsupported if self._checked(m) else None
            gates: list[SentenceGate | None] = [None]

            async def call(timeout: float, m: ChainMember = m) -> GenerationResult:
                try_started[0] = self._clock()
                gates[0] = self._gate(m, request) if early else None
                if self.config.first_token_timeout_s is not None or gates[0] is not None:
                    return await self._generate_streamed(m, request, timeout, gates[0], early)
                try:
                    return await asyncio.wait_for(m.backend.generate(request), timeout)
                except asyncio.TimeoutError as exc:
                    raise StageTimeoutError(f"{m.name} did not answer within {timeout:g}s") from exc

            try:
                result, attempt = await self._call(m, until, call)
            except _Failed as failed:
                attempts.append(failed.attempt)
                continue
            # The first text's time counts from the chain's start: failed backends included.
            first = (None if result.first_token_ms is None else round(
                (try_started[0] - started) * 1000 + result.first_token_ms, 2))
            gate = gates[0]
            if gate is None:
                gate = self._gate(m, request)
                if gate is None:
                    return result.model_copy(update={"attempts": [*attempts, attempt],
                                                     "route": route, "first_token_ms": first})
                gate.feed(result.text)
            gate.flush()
            return await self._after_gate(
                gate, result.model_copy(update={"first_token_ms": first}), request,
                [*attempts, attempt], route, started)
        raise self._exhausted(attempts)

    # ------------------------------------------------------------------ grounding

    def _checked(self, m: ChainMember) -> bool:
        """Whether ``m``'s answers are checked: not with grounding off, nor for the extractive
        backend (its sentences are the passages' own)."""
        return (self.grounded_fallback is not None
                and m.backend.name != self.grounded_fallback.name)

    def _gate(self, m: ChainMember, request: GenerationRequest) -> SentenceGate | None:
        """A sentence gate over the passages ``m`` puts in its prompt; None when its answers
        need no check (``_checked``)."""
        if not self._checked(m):
            return None
        plan = getattr(m.backend, "plan", None)
        passages: list[ScoredChunk] = (plan(request).passages if plan is not None
                                       else list(request.passages))
        return SentenceGate(passages, self.config.grounding, request.query)

    async def _after_gate(self, gate: SentenceGate, result: GenerationResult,
                          request: GenerationRequest, attempts: list[GenerationAttempt],
                          route: str | None, chain_started: float) -> GenerationResult:
        """The checked answer, or (no sentence supported) the grounded fallback's."""
        grounded = gate.verdict()
        if grounded.grounded:
            return result.model_copy(update={
                "text": grounded.text,
                "cited": extract_citations(grounded.text, result.passages_used),
                "unsupported_sentences": len(grounded.dropped),
                "attempts": attempts, "route": route})
        *before, last = attempts
        ungrounded = last.model_copy(update={"outcome": "ungrounded",
                                             "reason": grounded.reason()})
        started = self._clock()
        fallback = await self.grounded_fallback.generate(request)
        ok = GenerationAttempt(backend=fallback.backend, outcome="ok", tries=1,
                               elapsed_ms=round((self._clock() - started) * 1000, 2))
        return fallback.model_copy(update={
            "usage": result.usage,  # what the model spent; the fallback costs no tokens
            "unsupported_sentences": len(grounded.dropped),
            "attempts": [*before, ungrounded, ok], "route": route,
            # the served text's first words came with the fallback, after the check
            "first_token_ms": round((self._clock() - chain_started) * 1000, 2)})

    def _stopped(self, m: ChainMember, request: GenerationRequest, text: str,
                 first_ms: float | None) -> GenerationResult:
        """What a model said before it was stopped as hopeless, with what it spent."""
        plan = getattr(m.backend, "plan", None)
        prompt_tokens = plan(request).prompt_tokens if plan is not None else 0
        completion = m.backend.count_tokens(text)
        return GenerationResult(
            text=text, backend=m.name, passages_used=len(request.passages),
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                        total_tokens=prompt_tokens + completion),
            finish_reason="stopped", first_token_ms=first_ms)

    async def _generate_streamed(self, m: ChainMember, request: GenerationRequest,
                                 timeout: float, gate: SentenceGate | None = None,
                                 stop_after: int | None = None) -> GenerationResult:
        """A whole answer read from the backend's stream, so that a server that accepts the
        call and sends nothing is given up after ``first_token_timeout_s``, not after the
        whole answer's ``timeout``. With a ``gate``, every delta is fed to it, and the
        answer is stopped (the stream closed: decoding cancelled) once ``gate.hopeless``."""
        started = self._clock()
        first = min(timeout, self.config.first_token_timeout_s or timeout)
        iterator = m.backend.stream(request).__aiter__()
        text: list[str] = []
        try:
            try:
                item = await asyncio.wait_for(iterator.__anext__(), first)
            except asyncio.TimeoutError as exc:
                raise StageTimeoutError(f"{m.name} sent nothing within {first:g}s") from exc
            first_ms = round((self._clock() - started) * 1000, 2)
            while "result" not in item:
                if gate is not None and "delta" in item:
                    text.append(item["delta"])
                    gate.feed(item["delta"])
                    if gate.hopeless(stop_after):
                        return self._stopped(m, request, "".join(text), first_ms)
                left = timeout - (self._clock() - started)
                try:
                    if left <= 0:
                        raise asyncio.TimeoutError
                    item = await asyncio.wait_for(iterator.__anext__(), left)
                except asyncio.TimeoutError as exc:
                    raise StageTimeoutError(
                        f"{m.name} did not finish within {timeout:g}s") from exc
            result: GenerationResult = item["result"]
            if result.first_token_ms is None:  # the stream's first item is its first text
                result = result.model_copy(update={"first_token_ms": first_ms})
            return result
        except StopAsyncIteration as exc:
            raise StageUnavailableError(f"{m.name} ended its stream without a result") from exc
        finally:
            await _close(iterator)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        members, route = self._plan(request)
        started = self._clock()
        request = await self._with_evidence(request)
        deadline = started + self.config.deadline_s
        attempts: list[GenerationAttempt] = []
        for i, m in enumerate(members):
            if not self._usable(m, attempts, request):
                continue
            until = self._share_end(members[i + 1:], deadline)

            async def first(timeout: float, m: ChainMember = m):
                """Open the stream and wait for its first item (the fallback point)."""
                iterator = m.backend.stream(request).__aiter__()
                timeout = min(timeout, self.config.first_token_timeout_s or timeout)
                try:
                    item = await asyncio.wait_for(iterator.__anext__(), timeout)
                except asyncio.TimeoutError as exc:
                    await _close(iterator)
                    raise StageTimeoutError(f"{m.name} sent nothing within {timeout:g}s") from exc
                except BaseException:
                    await _close(iterator)
                    raise
                return iterator, item

            try:
                (iterator, item), attempt = await self._call(m, until, first)
            except _Failed as failed:
                attempts.append(failed.attempt)
                continue
            # Committed to this backend from here on.
            gate = self._gate(m, request)
            text: list[str] = []  # what the model said, as it streams in
            try:
                while True:
                    if "result" in item and gate is not None:
                        tail = gate.flush()
                        if tail:
                            yield {"delta": tail}
                        result = await self._after_gate(gate, item["result"], request,
                                                        [*attempts, attempt], route, started)
                        if not gate.verdict().grounded and result.text:
                            yield {"delta": result.text}  # nothing was shown: the fallback's
                        item = {"result": result}
                    elif "result" in item:
                        item = {"result": item["result"].model_copy(
                            update={"attempts": [*attempts, attempt], "route": route})}
                    elif "delta" in item and gate is not None:
                        text.append(item["delta"])
                        released = gate.feed(item["delta"])
                        item = {"delta": released} if released else None
                        if gate.hopeless(self.config.grounding.stop_after_unsupported):
                            await _close(iterator)  # decoding cancelled: replaced at once
                            result = await self._after_gate(
                                gate, self._stopped(m, request, "".join(text), None), request,
                                [*attempts, attempt], route, started)
                            if result.text:
                                yield {"delta": result.text}
                            yield {"result": result}
                            return
                    if item is not None:
                        yield item
                    try:
                        item = await asyncio.wait_for(iterator.__anext__(), m.timeout_s)
                    except StopAsyncIteration:
                        return
                    except asyncio.TimeoutError as exc:
                        m.failures += 1
                        m.breaker.record_failure()
                        raise StageTimeoutError(
                            f"{m.name} stalled mid-stream for {m.timeout_s:g}s") from exc
                    except StageUnavailableError:
                        m.failures += 1
                        m.breaker.record_failure()
                        raise
            finally:
                await _close(iterator)
        raise self._exhausted(attempts)


async def _close(iterator: Any) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:
            pass
