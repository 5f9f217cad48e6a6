"""The session tier: the turns of a conversation by ``session_id``.

In memory first (bounded LRU, TTL 30 minutes by default, refreshed on every turn). With Redis
configured the turns are written through to it and read from it first, so a follow-up that
lands on another ingress replica sees the same conversation; when Redis is unavailable the
replica's own memory answers.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Callable

from ragserve.cache.keys import KeySpace, scoped_session
from ragserve.cache.stats import CacheCounters, current_request
from ragserve.cache.store import GuardedStore

__all__ = ["SessionStore", "Turn"]

Turn = tuple[str, str]  # (user question, assistant answer)


class SessionStore:
    def __init__(self, *, ttl_s: float, max_sessions: int, max_turns: int, keys: KeySpace,
                 counters: CacheCounters, backing: GuardedStore | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.max_turns = max_turns
        self.keys = keys
        self.counters = counters
        self.backing = backing
        self._clock = clock
        self._memory: OrderedDict[str, tuple[list[Turn], float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._memory)

    def _from_memory(self, session_id: str) -> list[Turn] | None:
        item = self._memory.get(session_id)
        if item is None:
            return None
        turns, expires = item
        if self._clock() >= expires:
            del self._memory[session_id]
            return None
        self._memory.move_to_end(session_id)
        return turns

    def _to_memory(self, session_id: str, turns: list[Turn]) -> None:
        self._memory[session_id] = (turns, self._clock() + self.ttl_s)
        self._memory.move_to_end(session_id)
        while len(self._memory) > self.max_sessions:
            self._memory.popitem(last=False)

    async def get(self, session_id: str) -> list[Turn]:
        """The turns of ``session_id`` within the caller's permission set (tenant, groups)."""
        turns: list[Turn] | None = None
        if self.backing is not None and self.backing.available:
            raw = await self.backing.get(self.keys.session(session_id))
            if raw is not None:
                turns = [(u, a) for u, a in json.loads(raw)]
                self._to_memory(scoped_session(session_id), turns)
        if turns is None:
            turns = self._from_memory(scoped_session(session_id))
        tier = self.counters.tiers["sessions"]
        if turns:
            tier.hits += 1
        else:
            tier.misses += 1
        turns = turns or []
        req = current_request()
        if req is not None:
            req.info.session_turns = len(turns)
        return list(turns)

    async def append(self, session_id: str, question: str, answer: str) -> None:
        turns = (await self._current(session_id)) + [(question, answer)]
        turns = turns[-self.max_turns:]
        self._to_memory(scoped_session(session_id), turns)
        if self.backing is not None:
            await self.backing.set(self.keys.session(session_id),
                                   json.dumps(turns).encode("utf-8"), self.ttl_s)

    async def _current(self, session_id: str) -> list[Turn]:
        if self.backing is not None and self.backing.available:
            raw = await self.backing.get(self.keys.session(session_id))
            if raw is not None:
                return [(u, a) for u, a in json.loads(raw)]
        return list(self._from_memory(scoped_session(session_id)) or [])
