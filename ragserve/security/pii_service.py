"""PII policies as a layer around the service (the ``RagService`` protocol).

``ingest``: each document's text goes through the caller's tenant's ingestion policy before
the pipeline sees it, so what is chunked, embedded, stored and later cited is the filtered
text (metadata is not filtered: keep PII out of metadata fields). ``query``: the answer goes
through the answers policy. ``query_events`` (streamed): with an answers policy, tokens are
held back and sent as one filtered ``token`` event per sentence (a boundary is ``.``, ``!`` or
``?`` followed by whitespace, or a newline; past ``max_hold_chars`` without one, up to the last
whitespace), and the ``done`` event carries the whole answer filtered. Limitation: a streamed
answer arrives a sentence at a time instead of a token at a time, and an entity split across a
boundary (only the forced cut at ``max_hold_chars`` can split one) may be missed in the
stream, though never in ``done``.

Filtering runs off the event loop (``asyncio.to_thread``); it sits inside the query cache, so
cached answers and session turns are already filtered.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, AsyncIterator

from ragserve.security.access import Access, current_access
from ragserve.security.pii import PiiConfig, PiiFilter

__all__ = ["PiiFilteredService", "pii_layer"]

_BOUNDARY = re.compile(r"[.!?](?=\s)|\n")


def pii_layer(inner: Any, config: PiiConfig) -> Any:
    """``inner`` wrapped when any policy acts, else ``inner`` itself (no Presidio import)."""
    return PiiFilteredService(inner, config, PiiFilter.from_config(config)) if config.enabled \
        else inner


class PiiFilteredService:
    def __init__(self, inner: Any, config: PiiConfig, pii: PiiFilter, *,
                 max_hold_chars: int = 1000) -> None:
        self.inner = inner
        self.config = config
        self.pii = pii
        self.max_hold_chars = max_hold_chars

    def __getattr__(self, name: str) -> Any:  # every other method passes through
        return getattr(self.inner, name)

    async def ingest(self, req: Any) -> Any:
        tenant = (current_access(required=False) or Access()).tenant
        policy = self.config.ingest_policy(tenant)
        if policy.active:
            docs = await asyncio.to_thread(lambda: [
                d.model_copy(update={"text": self.pii.apply(d.text, policy)})
                for d in req.documents])
            req = req.model_copy(update={"documents": docs})
        return await self.inner.ingest(req)

    async def _answer(self, text: str) -> str:
        if not text or not self.config.answers.active:
            return text
        return await asyncio.to_thread(self.pii.apply, text, self.config.answers)

    async def query(self, req: Any, **kwargs: Any) -> Any:
        resp = await self.inner.query(req, **kwargs)
        answer = await self._answer(resp.answer)
        return resp if answer == resp.answer else resp.model_copy(update={"answer": answer})

    async def query_events(self, req: Any, **kwargs: Any) -> AsyncIterator[tuple[str, dict]]:
        if not self.config.answers.active:
            async for item in self.inner.query_events(req, **kwargs):
                yield item
            return
        held = ""
        async for event, data in self.inner.query_events(req, **kwargs):
            if event == "token":
                held += data.get("delta", "")
                cut = self._cut(held)
                if cut:
                    yield "token", {**data, "delta": await self._answer(held[:cut])}
                    held = held[cut:]
                continue
            if event == "done":
                if held:
                    yield "token", {"delta": await self._answer(held)}
                    held = ""
                data = {**data, "answer": await self._answer(data.get("answer") or "")}
            yield event, data

    def _cut(self, held: str) -> int:
        """Where the held text may be sent up to (0: hold on)."""
        ends = [m.end() for m in _BOUNDARY.finditer(held)]
        if ends:
            return ends[-1]
        if len(held) > self.max_hold_chars:
            return held.rfind(" ") + 1 if " " in held else len(held)
        return 0
