"""Token metering as a layer around the service (the ``RagService`` protocol): after each
request the caller's key is charged what the request actually used — an answer's prompt and
completion tokens, the tokens of embedded or reranked text — against its tokens-per-minute
and per-day windows (``KeyLimiter.charge``). A request that overshoots fills the window; the
next one is refused (429) until it drains."""

from __future__ import annotations

from typing import Any, AsyncIterator

from ragserve.security.access import current_principal
from ragserve.security.ratelimit import KeyLimiter

__all__ = ["MeteredService"]


def _tokens(resp: Any) -> int:
    usage = getattr(resp, "usage", None)
    if usage is None:
        return 0
    if isinstance(usage, dict):
        return int(usage.get("total_tokens") or 0)
    return int(getattr(usage, "total_tokens", 0) or 0)


class MeteredService:
    def __init__(self, inner: Any, limiter: KeyLimiter) -> None:
        self.inner = inner
        self.limiter = limiter

    def __getattr__(self, name: str) -> Any:  # every other method passes through
        return getattr(self.inner, name)

    async def _charge(self, tokens: int) -> None:
        principal = current_principal()
        if principal is not None and tokens > 0:
            await self.limiter.charge(principal, tokens)

    async def query(self, req: Any, **kwargs: Any) -> Any:
        resp = await self.inner.query(req, **kwargs)
        await self._charge(_tokens(resp))
        return resp

    async def query_events(self, req: Any, **kwargs: Any) -> AsyncIterator[tuple[str, dict]]:
        async for event, data in self.inner.query_events(req, **kwargs):
            if event == "done":
                await self._charge(_tokens(data))
            yield event, data

    async def embed(self, req: Any) -> Any:
        resp = await self.inner.embed(req)
        await self._charge(_tokens(resp))
        return resp

    async def rerank(self, req: Any) -> Any:
        resp = await self.inner.rerank(req)
        await self._charge(_tokens(resp))
        return resp
