"""Cheaper model for simple queries: a rule anyone can read, set by ``RoutingConfig``.

A query is *simple* when it has at most ``max_query_tokens`` tokens, none of the ``hard_terms``
(phrases that ask for reasoning: "why", "compare", "explain"...), and no conversation history.
Everything else is *hard*.
"""

from __future__ import annotations

import re
from typing import Callable, Literal

from ragserve.config import RoutingConfig
from ragserve.schemas import GenerationRequest

__all__ = ["ComplexityRouter", "Route"]

Route = Literal["simple", "hard"]


class ComplexityRouter:
    def __init__(self, config: RoutingConfig, count_tokens: Callable[[str], int]) -> None:
        self.config = config
        self.count_tokens = count_tokens
        terms = sorted((t.strip().lower() for t in config.hard_terms if t.strip()), key=len,
                       reverse=True)
        self._hard = re.compile(r"\b(" + "|".join(re.escape(t) for t in terms) + r")\b",
                                re.IGNORECASE) if terms else None
        self.counts: dict[str, int] = {"simple": 0, "hard": 0}

    def classify(self, request: GenerationRequest) -> tuple[Route, str]:
        """The route and the reason, e.g. ``("hard", "asks 'why'")``."""
        if request.history:
            return "hard", "follow-up in a conversation"
        tokens = self.count_tokens(request.query)
        if tokens > self.config.max_query_tokens:
            return "hard", f"{tokens} tokens > {self.config.max_query_tokens}"
        if self._hard is not None:
            match = self._hard.search(request.query)
            if match:
                return "hard", f"asks {match.group(1).lower()!r}"
        return "simple", f"{tokens} tokens, no reasoning terms"

    def route(self, request: GenerationRequest) -> tuple[Route, str]:
        route, reason = self.classify(request)
        self.counts[route] += 1
        return route, reason
