"""``ragserve keys new``: make an API key offline (for the Serve config or a Kubernetes Secret).

Prints the key (shown this once) and its SHA-256 — the config may hold either a reference to
the key (``key: {env: NAME}`` / ``{file: path}``) or just ``key_sha256``. Keys made at run time
come from ``POST /v1/admin/keys`` instead."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ragserve.cli.options import EXIT_OK, Context
from ragserve.security.keys import hash_key, new_key

__all__ = ["register", "run"]


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("keys", parents=parents, help="make an API key (offline)")
    parser.add_argument("action", choices=["new"], help="new: print a fresh key and its hash")
    parser.add_argument("--quiet", action="store_true", help="print the key only")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    key = new_key()
    print(key if args.quiet else json.dumps({"key": key, "key_sha256": hash_key(key)}))
    return EXIT_OK
