"""``Recorder`` on Ray's metrics API: the metrics ``ragserve.observability.metrics`` defines,
exported by each node's metrics agent beside Serve's own (with Serve's application,
deployment and replica tags added).

Ray's Prometheus export prefixes every name with ``ray_`` and gives a counter its ``_total``
suffix itself, so ``ragserve_requests_total`` is scraped as ``ray_ragserve_requests_total``.

Cheap on the request path: counter increments are summed in process (``CounterBuffer``) and
histogram observations queued (``ObservationBuffer``); a daemon thread hands them to Ray every
``FLUSH_INTERVAL_S`` — well inside Ray's own export interval, so a scrape sees them no later
than before. The metric objects are
``ray.util.metrics`` ones carrying the replica's tags (deployment, replica, application) as
default tags set once — the series ``ray.serve.metrics`` would make, without its per-call
lookup of the replica context.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from ray.util import metrics as ray_metrics

from ragserve.observability.metrics import (
    METRICS,
    CounterBuffer,
    MetricSpec,
    ObservationBuffer,
    NullRecorder,
    Recorder,
)

__all__ = ["RayRecorder", "recorder", "exported_name"]


def exported_name(name: str) -> str:
    """The series name Prometheus sees for a ragserve metric (histograms add
    ``_bucket``/``_sum``/``_count``)."""
    return f"ray_{name}"


FLUSH_INTERVAL_S = 1.0
"""How often summed counter increments go to Ray (its metrics export every few seconds)."""


def _replica_tags() -> dict[str, str]:
    """The tags ``ray.serve.metrics`` adds in a replica (none outside one)."""
    try:
        from ray.serve import context

        replica = context._get_internal_replica_context()
    except Exception:
        replica = None
    if replica is None:
        return {}
    tags = {"deployment": replica.deployment, "replica": replica.replica_tag}
    if replica.app_name:
        tags["application"] = replica.app_name
    return tags


class RayRecorder:
    """One Ray metric object per ragserve metric, made on first use; counters and histogram
    observations buffered, gauges set at once."""

    def __init__(self, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self._metrics: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._specs = {m.name: m for m in METRICS}
        self._counters = CounterBuffer()
        self._observations = ObservationBuffer()
        self._interval = flush_interval_s
        self._stopped = threading.Event()
        threading.Thread(target=self._flush_loop, name="ragserve-metrics", daemon=True).start()
        atexit.register(self.flush)

    def _flush_loop(self) -> None:
        while not self._stopped.wait(self._interval):
            self.flush()

    def flush(self) -> None:
        """Hands the summed counter increments and the queued observations to Ray now."""
        self._counters.flush(lambda name, value, labels: self._metric(name).inc(value, tags=labels))
        self._observations.flush(
            lambda name, value, labels: self._metric(name).observe(value, tags=labels))

    def close(self) -> None:
        self._stopped.set()
        self.flush()

    def _metric(self, name: str) -> Any:
        m = self._metrics.get(name)
        if m is None:
            with self._lock:
                m = self._metrics.get(name) or self._make(self._specs[name])
                self._metrics[name] = m
        return m

    @staticmethod
    def _make(spec: MetricSpec) -> Any:
        tags = _replica_tags()
        keys = (*tags, *spec.labels)
        if spec.kind == "counter":  # Ray appends "_total" to a counter's name itself
            m = ray_metrics.Counter(spec.name.removesuffix("_total"),
                                    description=spec.description, tag_keys=keys)
        elif spec.kind == "histogram":
            m = ray_metrics.Histogram(spec.name, description=spec.description,
                                      boundaries=list(spec.buckets or ()), tag_keys=keys)
        else:
            m = ray_metrics.Gauge(spec.name, description=spec.description, tag_keys=keys)
        m.set_default_tags(tags)
        return m

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        if value:
            if self._specs[name].kind != "counter":  # a wrong name fails here, not later
                raise ValueError(f"{name} is a {self._specs[name].kind}, not a counter")
            self._counters.add(name, value, labels)

    def observe(self, name: str, value: float, **labels: str) -> None:
        if self._specs[name].kind != "histogram":  # a wrong name fails here, not later
            raise ValueError(f"{name} is a {self._specs[name].kind}, not a histogram")
        self._observations.add(name, value, labels)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._metric(name).set(value, tags=labels)


_RECORDER: Recorder = NullRecorder()


def recorder() -> Recorder:
    """This process's recorder (a ``NullRecorder`` until ``use_ray_metrics`` is called)."""
    return _RECORDER


def use_ray_metrics(enabled: bool = True) -> Recorder:
    global _RECORDER
    if enabled and not isinstance(_RECORDER, RayRecorder):
        _RECORDER = RayRecorder()
    elif not enabled:
        if isinstance(_RECORDER, RayRecorder):
            _RECORDER.close()
        _RECORDER = NullRecorder()
    return _RECORDER
