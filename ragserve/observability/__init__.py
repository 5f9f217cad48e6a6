"""Observability of the core: what is measured (``metrics``), request observation at the
ingress (``service``), traces (``tracing``), structured logs (``logs``) and error tracking
(``errors``). Ray-free: the deployments supply a ``Recorder`` built on Ray's metrics API."""

from ragserve.observability.metrics import (
    METRICS,
    CappedLabel,
    MemoryRecorder,
    MetricSpec,
    NullRecorder,
    Recorder,
)
from ragserve.observability.service import (
    HttpObserver,
    ObservedService,
    note_error,
    note_principal,
)

__all__ = ["METRICS", "MetricSpec", "Recorder", "NullRecorder", "MemoryRecorder", "CappedLabel",
           "HttpObserver", "ObservedService", "note_error", "note_principal"]
