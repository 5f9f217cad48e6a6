"""Which failures are worth retrying, and how long to wait before the next try.

Transient: timeouts, connection failures, HTTP 408/425/429/5xx. Anything else (a 400 from a
misconfigured request, a model that raises) will fail the same way again: no retry, the caller
falls through to its next option at once.
"""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Any

from ragserve.config import RetryConfig
from ragserve.errors import StageTimeoutError, StageUnavailableError

__all__ = ["is_transient", "retry_after_s", "backoff_s", "describe_failure"]

TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


def _status(exc: BaseException) -> int | None:
    details = getattr(exc, "details", None) or {}
    status = details.get("status")
    return int(status) if isinstance(status, (int, str)) and str(status).isdigit() else None


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (StageTimeoutError, TimeoutError)):
        return True
    if isinstance(exc, StageUnavailableError):
        status = _status(exc)
        return status is None or status in TRANSIENT_STATUS  # None: could not connect
    return isinstance(exc, (ConnectionError, OSError))


def retry_after_s(exc: BaseException, now: datetime | None = None) -> float | None:
    """The server's ``Retry-After`` (seconds or an HTTP date), if it sent one."""
    value: Any = (getattr(exc, "details", None) or {}).get("retry_after")
    if value is None:
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def backoff_s(attempt: int, config: RetryConfig, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff before try ``attempt + 1`` (``attempt`` ≥ 1)."""
    cap = min(config.max_delay_s, config.base_delay_s * (2 ** (attempt - 1)))
    return (rng or random).uniform(0, cap)


def describe_failure(exc: BaseException) -> str:
    """A short reason for responses and logs: ``timeout``, ``http 503``, ``unreachable``..."""
    if isinstance(exc, (StageTimeoutError, TimeoutError)):
        return "timeout"
    status = _status(exc)
    if status is not None:
        return f"http {status}"
    if isinstance(exc, StageUnavailableError) and getattr(exc, "code", "") == "circuit_open":
        return "circuit open"
    if isinstance(exc, StageUnavailableError):
        return "unreachable"
    return type(exc).__name__
