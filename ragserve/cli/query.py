"""``ragserve query QUESTION``: an answer with citations, or passages only with ``--search``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ragserve.cli.options import EXIT_ERROR, EXIT_OK, Context, positive_int
from ragserve.cli.output import eprint, print_details, print_json
from ragserve.client import RagServeClient

__all__ = ["register", "run", "parse_filter"]


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "query", parents=parents, help="ask a question (or --search for passages only)"
    )
    parser.add_argument("question")
    parser.add_argument("--top-k", type=positive_int, default=None, help="retriever candidates")
    parser.add_argument("--rerank-top-n", type=positive_int, default=None, help="passages kept")
    parser.add_argument("--max-tokens", type=positive_int, default=None, help="answer length")
    parser.add_argument(
        "--filter",
        dest="filters",
        type=parse_filter,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata filter; repeat a key for any-of. VALUE is a JSON literal when it parses "
        "as one (42, true, \"42\"), else a string",
    )
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--search", action="store_true", help="passages only (POST /v1/search)")
    kind.add_argument("--stream", action="store_true", help="print the answer as it is written")
    parser.add_argument("--json", action="store_true", help="print the response as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    options: dict[str, Any] = {
        "top_k": args.top_k, "rerank_top_n": args.rerank_top_n, "filters": _filters(args.filters)
    }
    with ctx.client() as client:
        if args.search:
            search = client.search(args.question, **options)
            return _print_answer(search.model_dump(mode="json", exclude_unset=True),
                                 as_json=args.json, citations_key="results")
        options["max_tokens"] = args.max_tokens
        if args.stream:
            return _stream_answer(client, args.question, options, as_json=args.json)
        answer = client.query(args.question, **options)
        return _print_answer(answer.model_dump(mode="json", exclude_unset=True),
                             as_json=args.json, citations_key="citations")


def parse_filter(item: str) -> tuple[str, Any]:
    """``KEY=VALUE``; VALUE is a JSON scalar when it parses as one, else the string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"needs KEY=VALUE, got {item!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        return key, raw
    return key, value if isinstance(value, (str, int, float, bool)) else raw


def _filters(pairs: list[tuple[str, Any]]) -> dict[str, Any] | None:
    filters: dict[str, Any] = {}
    for key, value in pairs:
        if key in filters:  # a repeated key means any of the values
            previous = filters[key]
            filters[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            filters[key] = value
    return filters or None


def _print_answer(answer: dict[str, Any], *, as_json: bool, citations_key: str) -> int:
    if as_json:
        print_json(answer)
        return EXIT_OK
    if citations_key == "citations":
        print(str(answer.get("answer", "")).strip())
        print()
    print_details(answer, citations_key=citations_key)
    return EXIT_OK


def _stream_answer(client: RagServeClient, question: str, options: dict[str, Any], *,
                   as_json: bool) -> int:
    meta: dict[str, Any] = {}
    done: dict[str, Any] | None = None
    printed = False
    for event, data in client.query_stream(question, **options):
        if as_json:
            print_json({"event": event, "data": data}, indent=None)
        if event == "meta" and isinstance(data, dict):
            meta = data
        elif event == "token":
            delta = data.get("delta", "") if isinstance(data, dict) else str(data)
            if not as_json:
                sys.stdout.write(delta)
                sys.stdout.flush()
            printed = printed or bool(delta)
        elif event == "done":
            done = data if isinstance(data, dict) else {}
        elif event == "error":
            if printed and not as_json:
                print()
            error = data if isinstance(data, dict) else {}
            eprint(f"error: {error.get('message') or error.get('code') or data}")
            return EXIT_ERROR
    if done is None:
        if printed and not as_json:
            print()
        eprint("error: the stream ended before the answer was complete")
        return EXIT_ERROR
    if not as_json:
        print("\n" if printed else "", end="")
        print()
        cited = set(done.get("cited") or [])
        citations = [
            {**c, "cited": c.get("cited") or c.get("number") in cited}
            for c in (done.get("citations") if done.get("citations") is not None
                      else meta.get("citations")) or []
        ]
        print_details({**meta, **done, "citations": citations}, citations_key="citations")
    return EXIT_OK
