"""``Recorder`` on Ray's metrics API: the metrics ``ragserve.observability.metrics`` defines,
exported by each node's metrics agent beside Serve's own (with Serve's application,
deployment and replica tags added).

Ray's Prometheus export prefixes every name with ``ray_`` and gives a counter its ``_total``
suffix itself, so ``ragserve_requests_total`` is scraped as ``ray_ragserve_requests_total``.
"""

from __future__ import annotations

import threading
from typing import Any

from ray.serve import metrics as serve_metrics

from ragserve.observability.metrics import METRICS, MetricSpec, NullRecorder, Recorder

__all__ = ["RayRecorder", "recorder", "exported_name"]


def exported_name(name: str) -> str:
    """The series name Prometheus sees for a ragserve metric (histograms add
    ``_bucket``/``_sum``/``_count``)."""
    return f"ray_{name}"


class RayRecorder:
    """One Ray metric object per ragserve metric, made on first use."""

    def __init__(self) -> None:
        self._metrics: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._specs = {m.name: m for m in METRICS}

    def _metric(self, name: str) -> Any:
        m = self._metrics.get(name)
        if m is None:
            with self._lock:
                m = self._metrics.get(name) or self._make(self._specs[name])
                self._metrics[name] = m
        return m

    @staticmethod
    def _make(spec: MetricSpec) -> Any:
        if spec.kind == "counter":  # Ray appends "_total" to a counter's name itself
            return serve_metrics.Counter(spec.name.removesuffix("_total"),
                                         description=spec.description, tag_keys=spec.labels)
        if spec.kind == "histogram":
            return serve_metrics.Histogram(spec.name, description=spec.description,
                                           boundaries=list(spec.buckets or ()),
                                           tag_keys=spec.labels)
        return serve_metrics.Gauge(spec.name, description=spec.description, tag_keys=spec.labels)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        if value:
            self._metric(name).inc(value, tags=labels)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._metric(name).observe(value, tags=labels)

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
        _RECORDER = NullRecorder()
    return _RECORDER
