"""What ragserve measures, defined once; how it is recorded is the caller's ``Recorder``.

The core never imports Ray: the deployments implement ``Recorder`` with Ray's metrics API
(``deployments/_metrics.py``), tests with ``MemoryRecorder``. Every metric is named
``ragserve_<what>_<unit>``; its labels are bounded (routes from a fixed list, stages,
backends and models from config, error codes from the error hierarchy) — never query text,
document ids or keys. A tenant label is only used through ``CappedLabel``.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Callable, Literal, Protocol, Sequence, runtime_checkable

__all__ = ["MetricSpec", "METRICS", "Recorder", "NullRecorder", "MemoryRecorder", "CappedLabel",
           "CounterBuffer", "ObservationBuffer",
           "spec", "LATENCY_BUCKETS_S", "BREAKER_STATES"]

_log = logging.getLogger(__name__)

Kind = Literal["counter", "histogram", "gauge"]

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
"""``ragserve_breaker_state``'s value per state."""


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    description: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None


METRICS: tuple[MetricSpec, ...] = (
    # --- the edge: every HTTP request
    MetricSpec("ragserve_requests_total", "counter",
               "HTTP requests by route template and status code.", ("route", "status")),
    MetricSpec("ragserve_request_duration_seconds", "histogram",
               "End-to-end latency at the ingress, by route.", ("route",), LATENCY_BUCKETS_S),
    MetricSpec("ragserve_errors_total", "counter",
               "Failed requests by error type (ragserve error code) and HTTP code.",
               ("type", "code")),
    MetricSpec("ragserve_auth_denied_total", "counter",
               "Requests refused by an authentication or scope check (401/403).",
               ("route", "code")),
    MetricSpec("ragserve_rate_limited_total", "counter",
               "Requests refused by a rate or quota limit (429).", ("route",)),
    MetricSpec("ragserve_tenant_requests_total", "counter",
               "Requests by tenant (capped: past the cap counted as 'other').", ("tenant",)),
    # --- the answer: recorded from every response at the ingress
    MetricSpec("ragserve_stage_duration_seconds", "histogram",
               "Time spent in each stage (embed, retrieve, rerank, generate).", ("stage",),
               LATENCY_BUCKETS_S),
    MetricSpec("ragserve_time_to_first_token_seconds", "histogram",
               "Request start to the answer's first text (streamed: the first token; whole: when "
               "the generator produced it).", (), LATENCY_BUCKETS_S),
    MetricSpec("ragserve_tokens_total", "counter",
               "Generated-answer tokens by direction (prompt/completion), backend and model.",
               ("direction", "backend", "model")),
    MetricSpec("ragserve_generation_cost_total", "counter",
               "Estimated spend on generation from the configured price table.",
               ("backend", "model", "currency")),
    MetricSpec("ragserve_cache_requests_total", "counter",
               "Cache lookups per tier (query, embedding) and result (hit, miss, deduplicated).",
               ("tier", "result")),
    MetricSpec("ragserve_degraded_total", "counter",
               "Answers served degraded, by reason.", ("reason",)),
    MetricSpec("ragserve_generation_attempts_total", "counter",
               "Generator backends tried per answer, by backend and outcome (ok, failed, skipped).",
               ("backend", "outcome")),
    MetricSpec("ragserve_generation_retries_total", "counter",
               "Retries (tries after the first) per generator backend.", ("backend",)),
    MetricSpec("ragserve_generation_fallbacks_total", "counter",
               "Answers given by a fallback backend, by the backend that answered.", ("backend",)),
    MetricSpec("ragserve_empty_results_total", "counter",
               "Requests that found no passages, by route.", ("route",)),
    MetricSpec("ragserve_results_returned", "histogram",
               "Passages returned per request (after reranking).", ("route",), SIZE_BUCKETS),
    # --- the stage replicas
    MetricSpec("ragserve_batch_size", "histogram",
               "Items per model call of a batched stage (embedder texts, reranker queries).",
               ("stage",), SIZE_BUCKETS),
    MetricSpec("ragserve_retrieval_candidates", "histogram",
               "Candidates the retriever returned per search.", (), SIZE_BUCKETS),
    MetricSpec("ragserve_breaker_state", "gauge",
               "Circuit breaker per generator backend: 0 closed, 1 half-open, 2 open.",
               ("backend",)),
    MetricSpec("ragserve_stage_calls_total", "counter",
               "Calls served by a stage replica, by stage, method and outcome (ok, error).",
               ("stage", "method", "outcome")),
)

_BY_NAME = {m.name: m for m in METRICS}


def spec(name: str) -> MetricSpec:
    return _BY_NAME[name]


@runtime_checkable
class Recorder(Protocol):
    """Where measurements go. ``labels`` must name exactly the metric's labels."""

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None: ...

    def observe(self, name: str, value: float, **labels: str) -> None: ...

    def set(self, name: str, value: float, **labels: str) -> None: ...


class NullRecorder:
    """Metrics off."""

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        pass

    def observe(self, name: str, value: float, **labels: str) -> None:
        pass

    def set(self, name: str, value: float, **labels: str) -> None:
        pass


class MemoryRecorder:
    """Keeps everything in dicts (tests, and a process without Ray). Checks names and labels
    against ``METRICS`` as the Ray recorder does."""

    def __init__(self) -> None:
        self.counters: dict[tuple, float] = defaultdict(float)
        self.observations: dict[tuple, list[float]] = defaultdict(list)
        self.gauges: dict[tuple, float] = {}

    @staticmethod
    def _key(name: str, kind: Kind, labels: dict[str, str]) -> tuple:
        s = _BY_NAME[name]
        if s.kind != kind or set(labels) != set(s.labels):
            raise ValueError(f"{name}: a {s.kind} with labels {s.labels}, not {kind} {sorted(labels)}")
        return (name, *sorted((k, str(v)) for k, v in labels.items()))

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        self.counters[self._key(name, "counter", labels)] += value

    def observe(self, name: str, value: float, **labels: str) -> None:
        self.observations[self._key(name, "histogram", labels)].append(value)

    def set(self, name: str, value: float, **labels: str) -> None:
        self.gauges[self._key(name, "gauge", labels)] = value

    def total(self, name: str, **labels: str) -> float:
        """The sum of a counter over the series matching ``labels``."""
        want = {(k, str(v)) for k, v in labels.items()}
        return sum(v for k, v in self.counters.items() if k[0] == name and want <= set(k[1:]))

    def values(self, name: str, **labels: str) -> list[float]:
        want = {(k, str(v)) for k, v in labels.items()}
        return [x for k, vs in self.observations.items()
                if k[0] == name and want <= set(k[1:]) for x in vs]


def _hand_on(sink: Callable[[str, float, dict[str, str]], None], name: str, value: float,
             labels: dict[str, str], refused: set[str]) -> None:
    """``sink(name, value, labels)``; what it refuses is dropped (measuring never fails the
    caller), with a warning the first time each metric is refused, so a wrong label is not
    lost in silence."""
    try:
        sink(name, value, labels)
    except Exception as exc:
        if name not in refused:
            refused.add(name)
            _log.warning("metric %s dropped: %s: %s", name, type(exc).__name__, exc)


class CounterBuffer:
    """Counter increments summed in process and handed on once per series per ``flush``.

    A request increments several counters; a metrics backend's call costs microseconds each
    (Ray's: tags merged and checked, then a call into its core worker), while adding to a dict
    costs a fraction of one. Whoever owns the buffer calls ``flush`` on a schedule shorter
    than the backend's own export interval, so nothing is seen later than it would be."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._lock = threading.Lock()
        self._refused: set[str] = set()

    def add(self, name: str, value: float, labels: dict[str, str]) -> None:
        key = (name, tuple(labels.items()))
        with self._lock:
            self._pending[key] = self._pending.get(key, 0.0) + value

    def flush(self, sink: Callable[[str, float, dict[str, str]], None]) -> int:
        """Hands each series' sum to ``sink(name, value, labels)``; returns the series handed."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for (name, labels), value in pending.items():
            _hand_on(sink, name, value, dict(labels), self._refused)
        return len(pending)


class ObservationBuffer:
    """Histogram observations queued in process and handed on together per ``flush``.

    A histogram cannot be summed the way a counter can (each value lands in its bucket), so
    every observation still reaches the backend. What the queue changes is where: a request
    appends a tuple, and the owner's flush thread makes the backend's calls one after another
    — measured on the graph, the same calls cost several times more scattered through request
    handling (caches cold, among other processes' work) than in one pass. At most ``limit``
    observations wait between flushes; beyond that they are counted in ``dropped`` and lost,
    so a stalled flusher costs memory no more than a few megabytes."""

    def __init__(self, limit: int = 100_000) -> None:
        # A deque: appends and pops are atomic, so no lock and nothing lost to a flush that
        # runs while requests add.
        self._pending: deque[tuple[str, float, dict[str, str]]] = deque()
        self._refused: set[str] = set()
        self.limit = limit
        self.dropped = 0
        self._reported = 0

    def add(self, name: str, value: float, labels: dict[str, str]) -> None:
        if len(self._pending) < self.limit:
            self._pending.append((name, value, labels))
        else:
            self.dropped += 1

    def flush(self, sink: Callable[[str, float, dict[str, str]], None]) -> int:
        """Hands the observations queued so far to ``sink(name, value, labels)``, oldest
        first; returns how many."""
        if self.dropped > self._reported:  # a flusher that fell behind is said, not silent
            _log.warning("%d histogram observations dropped (more than %d waited for a flush)",
                         self.dropped - self._reported, self.limit)
            self._reported = self.dropped
        pending = self._pending
        n = len(pending)
        for _ in range(n):
            name, value, labels = pending.popleft()
            _hand_on(sink, name, value, labels, self._refused)
        return n


class CappedLabel:
    """A label with at most ``cap`` distinct values in one process; later ones read ``other``."""

    def __init__(self, cap: int, overflow: str = "other") -> None:
        self.cap = cap
        self.overflow = overflow
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        if not value:
            return "none"
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self.cap:
                self._seen.add(value)
                return value
        return self.overflow


def names(kind: Kind | None = None) -> Sequence[str]:
    return [m.name for m in METRICS if kind is None or m.kind == kind]
