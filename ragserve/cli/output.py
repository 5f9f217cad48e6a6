"""How the CLI prints: answers and their details on stdout, errors and logs on stderr."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError

from ragserve.client import ServiceUnreachableError

__all__ = [
    "eprint", "print_json", "print_details", "validation_message", "unreachable_message",
    "log_to_stderr",
]

SNIPPET_CHARS = 100


def eprint(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def print_json(payload: Any, *, indent: int | None = 2) -> None:
    print(json.dumps(payload, indent=indent, ensure_ascii=False), flush=True)


def print_details(answer: dict[str, Any], *, citations_key: str) -> None:
    """Citations (or search results), timings, backends, usage, degradation and warnings."""
    citations = answer.get(citations_key) or []
    title = "results" if citations_key == "results" else "citations"
    print(f"{title}:" if citations else f"{title}: none")
    for position, cite in enumerate(citations, start=1):
        number = cite.get("number", position)
        score = cite.get("score")
        score_text = f"{score:.3f}" if isinstance(score, (int, float)) else "-"
        label = f"score {score_text}, cited" if cite.get("cited") else f"score {score_text}"
        print(f"  [{number}] {cite.get('doc_id', '?')} ({label}): {_snippet(cite)}")
    timings = answer.get("timings") or {}
    if timings:
        parts = [
            f"{key.removesuffix('_ms')} {value:.1f} ms"
            for key, value in timings.items()
            if isinstance(value, (int, float))
        ]
        print("timings: " + ", ".join(parts))
    backends = {k: v for k, v in (answer.get("backends") or {}).items() if v}
    if backends:
        print("backends: " + ", ".join(f"{k}={v}" for k, v in backends.items()))
    usage = answer.get("usage") or {}
    if usage:
        print(
            f"usage: {usage.get('prompt_tokens', 0)} prompt + "
            f"{usage.get('completion_tokens', 0)} completion tokens"
        )
    if answer.get("degraded"):
        print("degraded: yes (a fallback answered at some stage)")
    for warning in answer.get("warnings") or []:
        print(f"warning: {warning}")


def _snippet(cite: dict[str, Any]) -> str:
    text = " ".join(str(cite.get("text", "")).split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"


def validation_message(exc: ValidationError) -> str:
    """Where and what, e.g. ``top_k: Input should be less than or equal to 200``.

    The rejected values stay out: they can be the query text.
    """
    parts = []
    for error in exc.errors()[:5]:
        loc = ".".join(str(p) for p in error.get("loc", ()))
        msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(msg if not loc or loc.split(".")[0] in msg else f"{loc}: {msg}")
    return "; ".join(parts)


def unreachable_message(exc: ServiceUnreachableError) -> str:
    return (
        f"error: {exc.message}.\n"
        "Start it with `make serve`, or point --url / RAGSERVE_URL at a running one."
    )


@contextmanager
def log_to_stderr() -> Iterator[None]:
    """Show ragserve's warnings (e.g. the loaders' skipped files) for one command."""
    logger = logging.getLogger("ragserve")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
