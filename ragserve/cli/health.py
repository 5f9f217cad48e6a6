"""``ragserve health``: the service's readiness (``GET /readyz``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ragserve.cli.options import EXIT_ERROR, EXIT_OK, Context
from ragserve.cli.output import eprint, print_json

__all__ = ["register", "run"]


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "health", parents=parents, help="show the service's readiness (GET /readyz)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Exit 0 and print the readiness when ready; exit 2 when a stage is not (the service
    answers 503 then, with the same body)."""
    with ctx.client() as client:
        readiness = client.ready()
    if readiness.get("ready") is False:
        eprint("error: service not ready (HTTP 503): "
               + json.dumps(readiness, ensure_ascii=False))
        return EXIT_ERROR
    print_json(readiness)
    return EXIT_OK
