"""A circuit breaker: closed → open after ``failure_threshold`` consecutive failures → after
``reset_timeout_s`` one trial call (half-open) → closed on success, open again on failure.

While open, ``allow()`` is False and callers skip the dependency at once instead of paying its
timeout on every request. Time comes from an injectable clock so tests need no sleeping.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Callable

from ragserve.config import BreakerConfig

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(str, Enum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


class CircuitBreaker:
    def __init__(self, name: str, config: BreakerConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._state = BreakerState.closed
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self.opened_count = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.open and (
            self._clock() - self._opened_at >= self.config.reset_timeout_s
        ):
            self._state = BreakerState.half_open
            self._trial_in_flight = False
        return self._state

    def allow(self) -> bool:
        """Whether a call may go ahead now. In half-open, only one trial call at a time."""
        state = self.state
        if state is BreakerState.closed:
            return True
        if state is BreakerState.half_open and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._state = BreakerState.closed
        self._failures = 0
        self._trial_in_flight = False

    def record_cancelled(self) -> None:
        """The allowed call was abandoned (the client went away): neither a success nor a
        failure, but a half-open breaker must let the next trial through."""
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._state is BreakerState.half_open or self._failures >= self.config.failure_threshold:
            if self._state is not BreakerState.open:
                self.opened_count += 1
            self._state = BreakerState.open
            self._opened_at = self._clock()
            self._trial_in_flight = False

    def snapshot(self) -> dict:
        return {"state": self.state.value, "consecutive_failures": self._failures,
                "times_opened": self.opened_count}
