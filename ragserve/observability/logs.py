"""Structured logs: one JSON object per line, and log buffers that never sit on records.

``JsonFormatter`` writes what a record carries in ``extra={"fields": {...}}`` beside its
level, logger, message, time, the request id (``REQUEST_ID`` of the edge, passed in as a
getter) and the trace id. Callers put no request text in a record: queries appear as
``query_hash`` (``ragserve.text.query_fingerprint``).

``LogFlusher``: Serve's throughput mode buffers each replica's log records in a
``logging.handlers.MemoryHandler`` of 1,000 records (``RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE``),
flushed only when full or on an ERROR record, so a replica's log file stays empty for its
first 999 requests. The flusher flushes every memory handler it finds every
``interval_s`` from a daemon thread: records reach their files within that interval while
the request path keeps its cheap in-memory append.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import threading
import time
from pathlib import Path
from typing import Callable

from ragserve.config import LoggingConfig
from ragserve.observability import tracing

__all__ = ["JsonFormatter", "LogFlusher", "configure_logging", "REQUEST_LOGGER"]

REQUEST_LOGGER = "ragserve.requests"


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str, request_id: Callable[[], str | None] = lambda: None):
        super().__init__()
        self.component = component
        self.request_id = request_id

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "component": self.component,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or self.request_id()
        if rid:
            out["request_id"] = rid
        trace_id = tracing.current_trace_id()
        if trace_id:
            out["trace_id"] = trace_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: an exception's message may quote request content.
            out["exception"] = record.exc_info[0].__name__
        return json.dumps(out, default=str, separators=(",", ":"))


class LogFlusher:
    """Flushes every ``MemoryHandler`` on the given loggers every ``interval_s`` (a daemon
    thread per process; ``start`` is idempotent)."""

    _started: "LogFlusher | None" = None

    def __init__(self, interval_s: float = 0.5, loggers: tuple[str, ...] = ("ray.serve", "")):
        self.interval_s = interval_s
        self.loggers = loggers
        self._stop = threading.Event()

    def flush_once(self) -> int:
        n = 0
        for name in self.loggers:
            for h in logging.getLogger(name).handlers:
                if isinstance(h, logging.handlers.MemoryHandler) and h.buffer:
                    h.flush()
                    n += 1
        return n

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.flush_once()
            except Exception:  # a handler closing under us: try again next tick
                pass

    @classmethod
    def start(cls, interval_s: float) -> "LogFlusher":
        if cls._started is None:
            cls._started = cls(interval_s)
            threading.Thread(target=cls._started._run, name="ragserve-log-flusher",
                             daemon=True).start()
        return cls._started

    def stop(self) -> None:
        self._stop.set()


def configure_logging(config: LoggingConfig, *, component: str, directory: str | Path | None,
                      request_id: Callable[[], str | None] = lambda: None) -> Path | None:
    """The ``ragserve`` loggers at ``config.level``; with ``json_format`` and a ``directory``,
    their records also go, one JSON object a line, to ``ragserve_<component>_<pid>.jsonl``
    there (written through at once). Returns that file's path."""
    logger = logging.getLogger("ragserve")
    logger.setLevel(config.level)
    LogFlusher.start(config.flush_interval_s)
    if not config.json_format or directory is None:
        return None
    path = Path(directory) / f"ragserve_{component}_{os.getpid()}.jsonl"
    if any(getattr(h, "_ragserve_json", False) for h in logger.handlers):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")  # flushes after every record
    handler.setFormatter(JsonFormatter(component, request_id))
    handler._ragserve_json = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    return path


def monotonic_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
