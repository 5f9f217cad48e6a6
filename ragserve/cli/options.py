"""What every command shares: exit codes, connection options, argument types, the Context."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from ragserve.client import DEFAULT_URL, MAX_ATTEMPTS, RagServeClient

__all__ = [
    "EXIT_OK", "EXIT_PARTIAL", "EXIT_ERROR", "EXIT_UNREACHABLE", "EXIT_INTERRUPTED",
    "EXIT_BROKEN_PIPE", "Context", "connection_options", "positive_int", "non_negative_int",
]

EXIT_OK, EXIT_PARTIAL, EXIT_ERROR, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left
DEFAULT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Context:
    """Where the service is and how to talk to it, from the options and the environment."""

    url: str
    api_key: str | None
    timeout_s: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Context:
        """Options win over ``RAGSERVE_URL`` / ``RAGSERVE_API_KEY``, which win over defaults."""
        return cls(
            url=(args.url or os.environ.get("RAGSERVE_URL") or DEFAULT_URL).rstrip("/"),
            api_key=args.api_key or os.environ.get("RAGSERVE_API_KEY") or None,
            timeout_s=args.timeout,
        )

    def client(self, *, max_attempts: int = MAX_ATTEMPTS, backoff_s: float = 0.5
               ) -> RagServeClient:
        return RagServeClient(self.url, api_key=self.api_key, timeout_s=self.timeout_s,
                              max_attempts=max_attempts, backoff_s=backoff_s)


def connection_options(*, on_command: bool) -> argparse.ArgumentParser:
    """``--url``, ``--api-key``, ``--timeout`` as a parent parser.

    On a command the defaults are suppressed, so that an option given before the command is
    not overwritten by the command's default.
    """
    parser = argparse.ArgumentParser(add_help=False)
    none = argparse.SUPPRESS if on_command else None
    parser.add_argument(
        "--url", default=none, help=f"service URL (env RAGSERVE_URL; default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--api-key", default=none, help="sent as a bearer token (env RAGSERVE_API_KEY)"
    )
    parser.add_argument(
        "--timeout", type=float, default=argparse.SUPPRESS if on_command else DEFAULT_TIMEOUT_S,
        help=f"seconds per request (default {DEFAULT_TIMEOUT_S:g})",
    )
    return parser


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return number
