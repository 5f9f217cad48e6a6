"""The one gate every entry passes: HTTP routes (as a FastAPI dependency) and the handle API.

A ``Guard`` runs its checks in order on a ``RequestContext``; a check admits by returning and
refuses by raising a ``RagServeError`` (401, 403, 429 ...), which both entries map the same way.
Authentication, scopes and rate limits plug in here as checks; with none the service is open.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Sequence

from ragserve.edge.context import REQUEST_ID, Operation, RequestContext, Transport, request_id_from
from ragserve.observability.service import note_principal

__all__ = ["Check", "Guard"]

Check = Callable[[RequestContext], Awaitable[None]]


class Guard:
    def __init__(self, checks: Sequence[Check] = ()) -> None:
        self.checks = list(checks)

    async def admit(self, operation: Operation, *, transport: Transport,
                    credentials: str | None = None,
                    request_id: str | None = None) -> RequestContext:
        """The request's context once every check admitted it; raises what a check raised."""
        rid = request_id or REQUEST_ID.get() or request_id_from(None)
        ctx = RequestContext(request_id=rid, operation=operation, transport=transport,
                             credentials=credentials)
        for check in self.checks:
            await check(ctx)
        if ctx.principal is not None:  # who was admitted, for the request log and metrics
            note_principal(ctx.principal, getattr(ctx, "tenant", None))
        return ctx
