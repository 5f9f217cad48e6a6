from ragserve.config import BreakerConfig
from ragserve.resilience import BreakerState, CircuitBreaker


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_opens_after_threshold_then_half_opens_and_closes():
    clock = Clock()
    b = CircuitBreaker("x", BreakerConfig(failure_threshold=2, reset_timeout_s=5), clock)
    assert b.allow()
    b.record_failure()
    assert b.state is BreakerState.closed
    b.record_failure()
    assert b.state is BreakerState.open and not b.allow()
    clock.t = 5.0
    assert b.state is BreakerState.half_open
    assert b.allow() and not b.allow()  # one trial at a time
    b.record_success()
    assert b.state is BreakerState.closed and b.snapshot()["times_opened"] == 1


def test_failed_trial_reopens():
    clock = Clock()
    b = CircuitBreaker("x", BreakerConfig(failure_threshold=1, reset_timeout_s=1), clock)
    b.record_failure()
    clock.t = 1.5
    assert b.allow()
    b.record_failure()
    assert b.state is BreakerState.open and not b.allow()
    assert b.snapshot()["times_opened"] == 2
