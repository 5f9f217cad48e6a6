"""Per-key limits with the ``limits`` package: requests per minute before a request, tokens per
minute and per day charged after it by what it actually used.

Moving windows (``MovingWindowRateLimiter``). With a Redis URL the counters live in Redis
(``redis://`` or ``rediss://``, password in the URL), shared by every ingress replica. When
Redis does not answer within ``timeout_s``, this replica counts in its own memory for
``retry_after_redis_s`` and then tries Redis again — the documented fail mode: limits loosen
(each replica counts alone) but no request fails because of it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from ragserve.security.access import Principal
from ragserve.security.config import KeyLimits, RateLimitConfig
from ragserve.security.errors import RateLimitedError

__all__ = ["KeyLimiter"]

log = logging.getLogger("ragserve.security")


def _storage_uri(url: str) -> str:
    return url if url.startswith("async+") else "async+" + url


class KeyLimiter:
    def __init__(self, config: RateLimitConfig, redis_url: str | None = None,
                 clock=time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._shared: MovingWindowRateLimiter | None = None
        if redis_url:
            storage = RedisStorage(_storage_uri(redis_url), implementation="redispy",
                                   key_prefix="ragserve-limits",
                                   socket_timeout=config.timeout_s,
                                   socket_connect_timeout=config.timeout_s)
            self._shared = MovingWindowRateLimiter(storage)
        self._shared_down_until = 0.0
        self.fallbacks = 0  # times this replica switched to local counting

    @property
    def backend(self) -> str:
        if self._shared is None:
            return "memory"
        return "redis" if self._clock() >= self._shared_down_until else "memory (redis down)"

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._shared is not None and self._clock() >= self._shared_down_until:
            try:
                return await asyncio.wait_for(getattr(self._shared, method)(*args, **kwargs),
                                              timeout=self.config.timeout_s * 2)
            except Exception as exc:  # noqa: BLE001 - Redis away: count locally, never fail
                self._shared_down_until = self._clock() + self.config.retry_after_redis_s
                self.fallbacks += 1
                log.warning("rate-limit store unavailable (%s); counting in this replica "
                            "for %.0f s", type(exc).__name__, self.config.retry_after_redis_s)
        return await getattr(self._local, method)(*args, **kwargs)

    def _limits(self, principal: Principal) -> KeyLimits:
        return principal.limits or self.config.default

    async def admit(self, principal: Principal) -> dict[str, str]:
        """Count one request; the ``RateLimit-*`` headers, or ``RateLimitedError`` (429) when
        the request or token budget is spent."""
        if not self.config.enabled:
            return {}
        limits = self._limits(principal)
        headers: dict[str, str] = {}
        if limits.requests_per_minute:
            item = RateLimitItemPerMinute(limits.requests_per_minute)
            ok = await self._call("hit", item, principal.key_id, "requests")
            headers = await self._headers(item, principal.key_id, "requests")
            if not ok:
                raise self._refusal("request", headers)
        for item in self._token_items(limits):
            if not await self._call("test", item, principal.key_id, "tokens"):
                raise self._refusal("token", await self._headers(item, principal.key_id, "tokens"))
        return headers

    async def charge(self, principal: Principal, tokens: int) -> None:
        """Record ``tokens`` used; a request that overshoots fills the window (the next one
        waits), it is not undone."""
        if not self.config.enabled or tokens <= 0:
            return
        for item in self._token_items(self._limits(principal)):
            stats = await self._call("get_window_stats", item, principal.key_id, "tokens")
            cost = min(tokens, stats.remaining)
            if cost > 0:
                await self._call("hit", item, principal.key_id, "tokens", cost=cost)

    @staticmethod
    def _token_items(limits: KeyLimits) -> list[RateLimitItem]:
        items: list[RateLimitItem] = []
        if limits.tokens_per_minute:
            items.append(RateLimitItemPerMinute(limits.tokens_per_minute))
        if limits.tokens_per_day:
            items.append(RateLimitItemPerDay(limits.tokens_per_day))
        return items

    async def _headers(self, item: RateLimitItem, *ids: str) -> dict[str, str]:
        stats = await self._call("get_window_stats", item, *ids)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return {"RateLimit-Limit": str(item.amount), "RateLimit-Remaining": str(stats.remaining),
                "RateLimit-Reset": str(reset)}

    @staticmethod
    def _refusal(kind: str, headers: dict[str, str]) -> RateLimitedError:
        retry = max(1, int(headers.get("RateLimit-Reset", "1")))
        return RateLimitedError(f"the key's {kind} limit is reached; retry in {retry} s",
                                headers={**headers, "Retry-After": str(retry)},
                                details={"limit": kind, "retry_after_s": retry})

    async def aclose(self) -> None:
        pass
