"""Key-value stores behind the cache tiers: one async interface, two implementations.

- ``MemoryStore``: in-process, TTL per key, bounded (least recently used evicted first). The
  embedded default: no server needed.
- ``RedisStore``: a Redis server through ``redis.asyncio``. Several ingress replicas share it.

``GuardedStore`` wraps either one so that a failing store never fails a request: every operation
is bounded by a timeout, errors count as misses, and a circuit breaker stops paying the timeout
on every call while the store is down; after ``reset_timeout_s`` one trial call probes it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Protocol

from ragserve.config import BreakerConfig
from ragserve.resilience.breaker import BreakerState, CircuitBreaker

__all__ = ["KVStore", "MemoryStore", "RedisStore", "GuardedStore", "StoreCounters"]

log = logging.getLogger("ragserve.cache")


class KVStore(Protocol):
    """What the cache tiers need from a store. Values are bytes; TTLs are seconds."""

    backend: str

    async def get(self, key: str) -> bytes | None: ...

    async def mget(self, keys: list[str]) -> list[bytes | None]: ...

    async def set(self, key: str, value: bytes, ttl_s: float, *, nx: bool = False) -> bool: ...

    async def mset(self, items: dict[str, bytes], ttl_s: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def delete_if_equals(self, key: str, value: bytes) -> bool: ...

    async def incr(self, key: str) -> int: ...

    async def ttl(self, key: str) -> float | None: ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """An in-process TTL store holding at most ``max_entries`` keys (LRU eviction).

    Single event loop, no awaits inside operations: each one is atomic for asyncio callers.
    """

    backend = "memory"

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and self._clock() >= expires:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def _put(self, key: str, value: bytes, ttl_s: float | None) -> None:
        expires = self._clock() + ttl_s if ttl_s else None
        self._data[key] = (value, expires)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return [self._live(k) for k in keys]

    async def set(self, key: str, value: bytes, ttl_s: float, *, nx: bool = False) -> bool:
        if nx and self._live(key) is not None:
            return False
        self._put(key, value, ttl_s)
        return True

    async def mset(self, items: dict[str, bytes], ttl_s: float) -> None:
        for key, value in items.items():
            self._put(key, value, ttl_s)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def delete_if_equals(self, key: str, value: bytes) -> bool:
        if self._live(key) == value:
            del self._data[key]
            return True
        return False

    async def incr(self, key: str) -> int:
        current = self._live(key)
        value = int(current or b"0") + 1
        self._put(key, str(value).encode(), None)
        return value

    async def ttl(self, key: str) -> float | None:
        if self._live(key) is None:
            return None
        expires = self._data[key][1]
        return None if expires is None else expires - self._clock()

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._data.clear()


_DELETE_IF_EQUALS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    """Redis through one connection pool. No client-side retries: ``GuardedStore`` decides."""

    backend = "redis"

    def __init__(self, url: str, *, socket_timeout_s: float = 0.25, max_connections: int = 64):
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._client = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
            max_connections=max_connections,
            health_check_interval=0,
        )

    async def get(self, key: str) -> bytes | None:
        return await self._client.get(key)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        return await self._client.mget(keys)

    async def set(self, key: str, value: bytes, ttl_s: float, *, nx: bool = False) -> bool:
        return bool(await self._client.set(key, value, px=max(1, int(ttl_s * 1000)), nx=nx))

    async def mset(self, items: dict[str, bytes], ttl_s: float) -> None:
        if not items:
            return
        px = max(1, int(ttl_s * 1000))
        async with self._client.pipeline(transaction=False) as pipe:
            for key, value in items.items():
                pipe.set(key, value, px=px)
            await pipe.execute()

    async def delete(self, key: str) -> None:
        await self._client.delete(key)

    async def delete_if_equals(self, key: str, value: bytes) -> bool:
        # Atomic compare-and-delete: a lock is released only by its owner.
        return bool(await self._client.eval(_DELETE_IF_EQUALS, 1, key, value))

    async def incr(self, key: str) -> int:
        return int(await self._client.incr(key))

    async def ttl(self, key: str) -> float | None:
        ms = await self._client.pttl(key)
        return None if ms < 0 else ms / 1000

    async def ping(self) -> bool:
        return bool(await self._client.ping())

    async def aclose(self) -> None:
        await self._client.aclose()


class StoreCounters:
    """Operation outcomes of one store (exported by the metrics work)."""

    def __init__(self) -> None:
        self.errors = 0
        self.bypassed = 0

    def as_dict(self) -> dict[str, int]:
        return {"errors": self.errors, "bypassed": self.bypassed}


_MISS = object()


class GuardedStore:
    """A store that never raises: failures and an open breaker read as misses / no-ops.

    ``available`` tells callers whether the last answer came from the store (used, for example,
    to skip work that only makes sense with a working store).
    """

    def __init__(self, store: KVStore, *, timeout_s: float = 0.5,
                 breaker: BreakerConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.backend = store.backend
        self.timeout_s = timeout_s
        self.breaker = CircuitBreaker(f"cache:{store.backend}", breaker or BreakerConfig(
            failure_threshold=3, reset_timeout_s=5.0), clock=clock)
        self.counters = StoreCounters()
        self.last_error: str | None = None

    @property
    def available(self) -> bool:
        return self.breaker.state is not BreakerState.open

    async def _run(self, op: str, call: Callable[[], Any], default: Any) -> Any:
        if not self.breaker.allow():
            self.counters.bypassed += 1
            return default
        try:
            result = await asyncio.wait_for(call(), timeout=self.timeout_s)
        except Exception as exc:  # any store fault degrades to a miss
            was_open = self.breaker.state is not BreakerState.closed
            self.breaker.record_failure()
            self.counters.errors += 1
            self.last_error = f"{op}: {type(exc).__name__}: {str(exc)[:200]}"
            if not was_open and self.breaker.state is BreakerState.open:
                log.warning("cache store %s unavailable, bypassing it (%s)", self.backend,
                            self.last_error)
            return default
        if self.breaker.state is not BreakerState.closed:
            log.info("cache store %s is back", self.backend)
        self.breaker.record_success()
        return result

    async def get(self, key: str) -> bytes | None:
        return await self._run("get", lambda: self.store.get(key), None)

    async def get_checked(self, key: str) -> tuple[bool, bytes | None]:
        """(reached the store, value): tells a missing key from an unavailable store."""
        result = await self._run("get", lambda: self.store.get(key), _MISS)
        return (False, None) if result is _MISS else (True, result)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return await self._run("mget", lambda: self.store.mget(keys), [None] * len(keys))

    async def set(self, key: str, value: bytes, ttl_s: float, *, nx: bool = False) -> bool | None:
        """True: written; False: ``nx`` and the key exists; None: the store is unavailable."""
        return await self._run("set", lambda: self.store.set(key, value, ttl_s, nx=nx), None)

    async def mset(self, items: dict[str, bytes], ttl_s: float) -> None:
        await self._run("mset", lambda: self.store.mset(items, ttl_s), None)

    async def delete(self, key: str) -> None:
        await self._run("delete", lambda: self.store.delete(key), None)

    async def delete_if_equals(self, key: str, value: bytes) -> bool:
        return bool(await self._run("delete", lambda: self.store.delete_if_equals(key, value),
                                    False))

    async def incr(self, key: str) -> int | None:
        return await self._run("incr", lambda: self.store.incr(key), None)

    async def ttl(self, key: str) -> float | None:
        return await self._run("ttl", lambda: self.store.ttl(key), None)

    async def ping(self) -> bool:
        return bool(await self._run("ping", self.store.ping, False))

    async def aclose(self) -> None:
        try:
            await self.store.aclose()
        except Exception:  # closing a dead connection is not an error worth raising
            pass

    def health(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "available": self.available,
            "breaker": self.breaker.snapshot(),
            **self.counters.as_dict(),
            **({"last_error": self.last_error} if self.last_error else {}),
        }
