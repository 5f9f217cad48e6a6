"""Resilience building blocks: circuit breakers (and, with the routing work, retries and
fallback chains)."""

from ragserve.resilience.breaker import BreakerState, CircuitBreaker

__all__ = ["BreakerState", "CircuitBreaker"]
