"""The ``ragserve`` parser and entry point: one sub-command per module of this package."""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from ragserve.cli import eval as eval_command
from ragserve.cli import health, index, ingest, keys, query
from ragserve.cli.options import (
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_UNREACHABLE,
    Context,
    connection_options,
)
from ragserve.cli.output import eprint, log_to_stderr, unreachable_message, validation_message
from ragserve.client import ServiceUnreachableError
from ragserve.errors import RagServeError

__all__ = ["build_parser", "main"]

COMMANDS = (ingest, index, query, health, eval_command, keys)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragserve",
        description="Client for a running ragserve service.",
        parents=[connection_options(on_command=False)],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Connection options are accepted after the command too.
    parents = [connection_options(on_command=True)]
    for command in COMMANDS:
        command.register(commands, parents)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (see ``ragserve.cli``)."""
    args = build_parser().parse_args(argv)
    try:
        with log_to_stderr():
            status: int = args.run(args, Context.from_args(args))
        sys.stdout.flush()  # a closed pipe shows here rather than at interpreter exit
        return status
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    except ServiceUnreachableError as exc:
        eprint(unreachable_message(exc))
        return EXIT_UNREACHABLE
    except RagServeError as exc:
        eprint(f"error: {exc.message}")
        return EXIT_ERROR
    except ValidationError as exc:  # an option the request models reject, checked client-side
        eprint(f"error: {validation_message(exc)}")
        return EXIT_ERROR
    except FileNotFoundError as exc:
        eprint(f"error: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        eprint("interrupted")
        return EXIT_INTERRUPTED


def _drop_stdout() -> None:
    """Point stdout at /dev/null: the reader has gone (``ragserve ... | head``), and Python
    would otherwise report the failed flush of what is still buffered when it exits."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor
        pass
