"""Generator routing: an ordered chain of backends with retries, a breaker per backend and an
optional cheaper backend for simple queries.

For each backend in order (the simple backend first when the router calls the query simple):
- skipped at once while its circuit breaker is open (or it failed to load);
- each call bounded by the backend's ``timeout_s`` and by what is left of ``deadline_s``;
- transient failures (timeouts, connection errors, 5xx, 429) retried up to
  ``retry.max_attempts`` tries in all, with full-jitter exponential backoff, waiting at least
  the server's ``Retry-After`` (one longer than ``retry.max_retry_after_s`` moves on instead);
- any other failure moves on to the next backend at once.

The result says which backend answered and what happened to each one before it
(``GenerationResult.attempts``). When every backend fails, ``StageUnavailableError`` carries the
same list; the pipeline then answers with the passages only, flagged ``degraded``.

A stream falls back only until its first token: after that the answer is committed to one
backend, and a failure ends the stream (the pipeline flags it ``degraded``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from ragserve.config import GeneratorConfig
from ragserve.errors import InvalidRequestError, StageTimeoutError, StageUnavailableError
from ragserve.generation.routing import ComplexityRouter
from ragserve.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from ragserve.resilience.retry import backoff_s, describe_failure, is_transient, retry_after_s
from ragserve.schemas import GenerationAttempt, GenerationRequest, GenerationResult

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

    def snapshot(self) -> dict:
        return {"backend": self.name, "timeout_s": self.timeout_s, "calls": self.calls,
                "failures": self.failures, "breaker": self.breaker.snapshot(),
                **({"load_error": self.load_error} if self.load_error else {})}


class _Failed(Exception):
    """One backend gave up (after its retries); carries the attempt record."""

    def __init__(self, attempt: GenerationAttempt) -> None:
        self.attempt = attempt


class FallbackGenerator:
    def __init__(self, config: GeneratorConfig, members: list[ChainMember],
                 simple: ChainMember | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None) -> None:
        if not members:
            raise ValueError("a generator chain needs at least one backend")
        self.config = config
        self.members = members
        self.simple = simple
        self.name = members[0].name
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.router = (ComplexityRouter(config.routing, members[0].backend.count_tokens)
                       if config.routing is not None and simple is not None else None)

    @classmethod
    def from_backends(cls, config: GeneratorConfig, backends: list[Any],
                      simple: Any | None = None, **kw: Any) -> "FallbackGenerator":
        """``backends``: built from ``[config.backend, *config.fallbacks]``, in that order."""
        configs = [config.backend, *config.fallbacks]
        breaker = BreakerConfig(failure_threshold=config.breaker.failure_threshold,
                                reset_timeout_s=config.breaker.reset_timeout_s)
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
        return {
            "chain": [m.snapshot() for m in self.members],
            **({"simple": self.simple.snapshot()} if self.simple else {}),
            **({"routes": dict(self.router.counts)} if self.router else {}),
        }

    def healthy(self) -> bool:
        """False when no backend can be tried at all (all failed to load)."""
        return any(m.load_error is None for m in self._all())

    async def aclose(self) -> None:
        for m in self._all():
            close = getattr(m.backend, "aclose", None)
            if close is not None:
                await close()

    # ------------------------------------------------------------------ routing

    def _plan(self, request: GenerationRequest) -> tuple[list[ChainMember], str | None]:
        if self.router is None:
            return list(self.members), None
        route, reason = self.router.route(request)
        log.debug("route %s (%s)", route, reason)
        return ([self.simple] if route == "simple" else []) + list(self.members), route

    def _usable(self, m: ChainMember, attempts: list[GenerationAttempt]) -> bool:
        """Whether ``m`` may be tried now; if not, record why it was skipped."""
        skip = ("not loaded" if m.load_error is not None
                else None if m.breaker.allow() else "circuit open")
        if skip is not None:
            attempts.append(GenerationAttempt(backend=m.name, outcome="skipped", reason=skip))
        return skip is None

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
                log.warning("generator %s failed (%s), try %d", m.name, reason, tries)
                if (tries >= self.config.retry.max_attempts or not is_transient(exc)
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
        deadline = self._clock() + self.config.deadline_s
        attempts: list[GenerationAttempt] = []
        for m in members:
            if not self._usable(m, attempts):
                continue

            async def call(timeout: float, m: ChainMember = m) -> GenerationResult:
                try:
                    return await asyncio.wait_for(m.backend.generate(request), timeout)
                except asyncio.TimeoutError as exc:
                    raise StageTimeoutError(f"{m.name} did not answer within {timeout:g}s") from exc

            try:
                result, attempt = await self._call(m, deadline, call)
            except _Failed as failed:
                attempts.append(failed.attempt)
                continue
            return result.model_copy(update={"attempts": [*attempts, attempt], "route": route})
        raise self._exhausted(attempts)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        members, route = self._plan(request)
        deadline = self._clock() + self.config.deadline_s
        attempts: list[GenerationAttempt] = []
        for m in members:
            if not self._usable(m, attempts):
                continue

            async def first(timeout: float, m: ChainMember = m):
                """Open the stream and wait for its first item (the fallback point)."""
                iterator = m.backend.stream(request).__aiter__()
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
                (iterator, item), attempt = await self._call(m, deadline, first)
            except _Failed as failed:
                attempts.append(failed.attempt)
                continue
            # Committed to this backend from here on.
            try:
                while True:
                    if "result" in item:
                        item = {"result": item["result"].model_copy(
                            update={"attempts": [*attempts, attempt], "route": route})}
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
