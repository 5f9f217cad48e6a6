"""``ragserve``: a command-line client for the running service (HTTP only, no Ray).

    ragserve ingest docs/ notes.md [--batch-size 16] [--root DIR]
    ragserve query "How are chunks sized?" [--top-k 20] [--rerank-top-n 5] [--max-tokens 256]
                   [--filter source=docs/a.md ...] [--search] [--stream] [--json]
    ragserve health

``--url`` (env ``RAGSERVE_URL``, default http://127.0.0.1:8000) and ``--api-key`` (env
``RAGSERVE_API_KEY``, sent as ``Authorization: Bearer``) go before or after the command.

Exit codes: 0 success; 1 ingestion finished but some batches failed; 2 the server answered
with an error (``error: <message>`` on stderr), nothing could be ingested, or bad usage;
3 the service could not be reached; 130 interrupted.

Ingestion retries a batch up to ``--retries`` times (default 3) with exponential backoff on
connection errors, timeouts, 5xx and 429 (honouring ``Retry-After``). That is safe because
ingestion is idempotent: a re-sent document keeps its ids and is answered ``unchanged``.
Any other 4xx skips the batch with the server's message.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from ragserve.ingest.loaders import load_documents
from ragserve.schemas import DocumentIn

__all__ = ["main", "build_parser", "ServiceClient", "ApiError", "ServiceUnreachable"]

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_OK, EXIT_PARTIAL, EXIT_ERROR, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 30.0
_SNIPPET_CHARS = 100


class ApiError(Exception):
    """The server answered with an error status (its ``error.message`` is the text)."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUS


class ServiceUnreachable(Exception):
    """No HTTP answer at all: connection refused, DNS failure, timeout."""


class ServiceClient:
    """Thin synchronous wrapper around httpx for the ragserve HTTP API."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": "ragserve-cli", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ServiceClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """JSON answer of a successful call; raises ApiError or ServiceUnreachable.

        ``body`` is JSON-encoded, unless it is ``bytes`` (already-encoded JSON).
        """
        if isinstance(body, bytes):
            kwargs: dict[str, Any] = {
                "content": body, "headers": {"Content-Type": "application/json"}
            }
        else:
            kwargs = {"json": body}
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceUnreachable(_describe(exc)) from exc
        if response.status_code >= 400:
            raise _api_error(response)
        return _json_or_text(response)

    def request_with_retries(
        self, method: str, path: str, body: Any, *, retries: int, backoff_s: float
    ) -> Any:
        """:meth:`request`, retried on unreachable/5xx/429. Only for idempotent calls."""
        for attempt in range(retries + 1):
            try:
                return self.request(method, path, body)
            except (ApiError, ServiceUnreachable) as exc:
                retryable = isinstance(exc, ServiceUnreachable) or exc.retryable
                if not retryable or attempt == retries:
                    raise
                delay = backoff_s * 2**attempt
                if isinstance(exc, ApiError) and exc.retry_after is not None:
                    delay = min(exc.retry_after, MAX_RETRY_AFTER_S)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def stream(self, path: str, body: Any) -> Iterator[Iterator[tuple[str, Any]]]:
        """Server-sent events of a POST as ``(event, data)`` pairs; data is parsed JSON."""
        try:
            with self._http.stream(
                "POST", path, json=body, headers={"Accept": "text/event-stream"}
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _api_error(response)
                yield _sse_events(response.iter_lines())
        except httpx.TransportError as exc:
            raise ServiceUnreachable(_describe(exc)) from exc


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragserve", description="Client for a running ragserve service."
    )
    _add_connection_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = commands.add_parser("ingest", help="load files and send them to the service")
    _add_connection_options(ingest, suppress=True)
    ingest.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    ingest.add_argument(
        "--batch-size", type=_positive_int, default=16, help="documents per request"
    )
    ingest.add_argument(
        "--max-batch-bytes",
        type=_positive_int,
        default=8_000_000,
        help="also start a new batch before a request body passes this many bytes",
    )
    ingest.add_argument("--root", type=Path, default=None, help="document ids are relative to it")
    ingest.add_argument("--retries", type=_non_negative_int, default=3, help="per failed batch")
    ingest.add_argument(
        "--backoff", type=float, default=0.5, help="first retry delay in seconds (doubles)"
    )
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")

    query = commands.add_parser("query", help="ask a question (or --search for passages only)")
    _add_connection_options(query, suppress=True)
    query.add_argument("question")
    query.add_argument("--top-k", type=_positive_int, default=None, help="retriever candidates")
    query.add_argument("--rerank-top-n", type=_positive_int, default=None, help="passages kept")
    query.add_argument("--max-tokens", type=_positive_int, default=None, help="answer length")
    query.add_argument(
        "--filter",
        dest="filters",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata filter; repeat a key for any-of. VALUE is a JSON literal when it parses "
        "as one (42, true, \"42\"), else a string",
    )
    query.add_argument("--search", action="store_true", help="passages only (POST /v1/search)")
    query.add_argument("--stream", action="store_true", help="print the answer as it is written")
    query.add_argument("--json", action="store_true", help="print the raw JSON response")

    health = commands.add_parser("health", help="show the service's readiness (GET /readyz)")
    _add_connection_options(health, suppress=True)

    ev = commands.add_parser(
        "eval", help="retrieval quality on a BEIR-format dataset (nDCG@10, recall, MRR@10)"
    )
    _add_connection_options(ev, suppress=True)
    ev.add_argument("dataset", type=Path, help="folder with corpus.jsonl, queries.jsonl, qrels/")
    ev.add_argument("--split", default="test", help="qrels split to evaluate (default test)")
    ev.add_argument("--modes", default="dense,sparse,hybrid,dense+rerank,hybrid+rerank",
                    help="in-process rankings, comma-separated: dense|sparse|hybrid[+rerank]")
    ev.add_argument("--fusion-weights", default=None,
                    help="compare the lexical_fusion fallback at these weights, e.g. 0.3,0.5,0.7 "
                    "(tune on train)")
    ev.add_argument("--fusions", default=None,
                    help="hybrid fusions to compare on one index, e.g. rrf,dbsf")
    ev.add_argument("--model", default=None, help="embedder model name or path (in-process)")
    ev.add_argument("--runtime", choices=["torch", "onnx"], default=None,
                    help="embedder runtime (in-process; default: the config's)")
    ev.add_argument("--quantize", choices=["none", "int8"], default=None,
                    help="embedder quantisation, with --runtime onnx (in-process)")
    ev.add_argument("--max-queries", type=_positive_int, default=None, help="first N query ids")
    ev.add_argument("--top-k", type=_positive_int, default=100, help="candidates per query")
    ev.add_argument("--service", action="store_true",
                    help="evaluate the running service at --url instead of in-process")
    ev.add_argument("--no-ingest", action="store_true", help="with --service: corpus is indexed")
    ev.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser


def _add_connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # On sub-commands the defaults are suppressed, so an option given before the command is not
    # overwritten by the sub-command's default.
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--url", default=default, help=f"service URL (env RAGSERVE_URL; default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--api-key", default=default, help="sent as a bearer token (env RAGSERVE_API_KEY)"
    )
    parser.add_argument(
        "--timeout", type=float, default=argparse.SUPPRESS if suppress else 120.0,
        help="seconds per request (default 120)",
    )


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return number


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    url = args.url or os.environ.get("RAGSERVE_URL") or DEFAULT_URL
    api_key = args.api_key or os.environ.get("RAGSERVE_API_KEY") or None
    handlers = {"ingest": _cmd_ingest, "query": _cmd_query, "health": _cmd_health}
    if args.command == "eval":
        try:
            return _cmd_eval(args, url, api_key)
        except FileNotFoundError as exc:
            _eprint(f"error: {exc}")
            return EXIT_ERROR
    try:
        with _log_to_stderr(), ServiceClient(
            url, api_key=api_key, timeout_s=args.timeout
        ) as client:
            return handlers[args.command](client, args, parser)
    except ApiError as exc:
        _eprint(f"error: {exc.message}")
        return EXIT_ERROR
    except ServiceUnreachable as exc:
        _eprint(_unreachable_message(url, str(exc)))
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        _eprint("interrupted")
        return EXIT_INTERRUPTED


def _cmd_eval(args: argparse.Namespace, url: str, api_key: str | None) -> int:
    import asyncio

    from ragserve.config import EmbedderConfig
    from ragserve.eval.beir import load_beir
    from ragserve.eval.runner import EvalSettings, run_in_process, run_over_http

    ds = load_beir(args.dataset, args.split, max_queries=args.max_queries)
    settings = EvalSettings(top_k=args.top_k)
    overrides = {k: v for k, v in (("model", args.model), ("runtime", args.runtime),
                                   ("quantize", args.quantize)) if v}
    if overrides:
        try:
            settings.embedder = EmbedderConfig.model_validate(
                {**settings.embedder.model_dump(), **overrides})
        except ValueError as exc:
            raise SystemExit(f"ragserve eval: {exc}") from None
    print(f"{ds.name} ({args.split}): {len(ds.corpus)} documents, {len(ds.queries)} queries")
    if args.service:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        results, info = asyncio.run(
            run_over_http(ds, url, settings, ingest=not args.no_ingest, headers=headers)
        )
    else:
        from ragserve.eval.runner import parse_mode

        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        try:
            for m in modes:
                parse_mode(m)
            if args.fusion_weights:
                settings.fusion_weights = [float(w) for w in args.fusion_weights.split(",")]
            if args.fusions:
                settings.fusions = [f.strip() for f in args.fusions.split(",")]
                if not set(settings.fusions) <= {"rrf", "dbsf"}:
                    raise ValueError("fusions are rrf and dbsf")
        except ValueError as exc:
            _eprint(f"error: {exc}")
            return EXIT_ERROR
        if not modes:
            _eprint("error: no modes given")
            return EXIT_ERROR
        results, info = asyncio.run(run_in_process(ds, settings, modes))
    print("  ".join(f"{k}={v}" for k, v in info.items()))
    header = f"{'mode':40} {'nDCG@10':>8} {'R@10':>8} {'R@100':>8} {'MRR@10':>8} {'q/s':>7}"
    print(header)
    print("-" * len(header))
    for r in results:
        m = r.metrics
        print(f"{r.mode:40} {m['ndcg@10']:8.4f} {m['recall@10']:8.4f} {m['recall@100']:8.4f} "
              f"{m['mrr@10']:8.4f} {r.queries / max(r.seconds, 1e-9):7.1f}")
    if args.json:
        args.json.write_text(json.dumps({"dataset": ds.name, "split": args.split, **info,
                                         "results": [r.as_dict() for r in results]}, indent=2))
    return EXIT_OK


def _cmd_ingest(client: ServiceClient, args: argparse.Namespace, parser: Any) -> int:
    started = time.perf_counter()
    documents = list(load_documents(args.paths, root=args.root))
    if not documents:
        _eprint("error: no documents to ingest (supported: .md .rst .txt .py .json .jsonl .yaml)")
        return EXIT_ERROR
    totals = {"created": 0, "updated": 0, "unchanged": 0}
    chunks_embedded = 0
    failed_batches = failed_docs = 0
    batches = list(_batches(documents, args.batch_size, args.max_batch_bytes))
    with tqdm(
        total=len(documents), unit="doc", desc="ingest", disable=args.no_progress, file=sys.stderr
    ) as bar:
        for number, (batch, body) in enumerate(batches, start=1):
            try:
                answer = client.request_with_retries(
                    "POST", "/v1/documents", body, retries=args.retries, backoff_s=args.backoff
                )
            except ApiError as exc:
                failed_batches += 1
                failed_docs += len(batch)
                bar.write(
                    f"error: batch {number}/{len(batches)} ({batch[0].id} …, {len(batch)} "
                    f"documents) failed with HTTP {exc.status}: {exc.message}",
                    file=sys.stderr,
                )
                bar.update(len(batch))
                continue
            for result in answer.get("documents", []):
                status = result.get("status")
                if status in totals:
                    totals[status] += 1
            chunks_embedded += int(answer.get("chunks_embedded", 0))
            bar.update(len(batch))
    elapsed = time.perf_counter() - started
    sent = len(documents) - failed_docs
    print(
        f"ingested {sent} of {len(documents)} documents in {len(batches)} batches: "
        f"{totals['created']} created, {totals['updated']} updated, "
        f"{totals['unchanged']} unchanged; {chunks_embedded} chunks embedded; {elapsed:.2f} s"
    )
    if failed_batches:
        _eprint(f"error: {failed_batches} batches ({failed_docs} documents) failed")
        return EXIT_ERROR if sent == 0 else EXIT_PARTIAL
    return EXIT_OK


def _cmd_query(client: ServiceClient, args: argparse.Namespace, parser: Any) -> int:
    if args.stream and args.search:
        parser.error("--stream and --search cannot be combined (search returns no answer)")
    body: dict[str, Any] = {"query": args.question}
    for key in ("top_k", "rerank_top_n", "max_tokens"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if args.search:
        body.pop("max_tokens", None)
    try:
        filters = _parse_filters(args.filters)
    except ValueError as exc:
        parser.error(str(exc))
    if filters:
        body["filters"] = filters
    if args.stream:
        body["stream"] = True
        return _stream_answer(client, body, as_json=args.json)
    answer = client.request("POST", "/v1/search" if args.search else "/v1/query", body)
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not args.search:
        print(answer.get("answer", "").strip())
        print()
    _print_details(answer, citations_key="results" if args.search else "citations")
    return EXIT_OK


def _cmd_health(client: ServiceClient, args: argparse.Namespace, parser: Any) -> int:
    try:
        answer = client.request("GET", "/readyz")
    except ApiError as exc:
        if exc.status == 503:
            _eprint(f"error: service not ready (HTTP {exc.status}): {exc.message}")
            return EXIT_ERROR
        raise
    print(answer if isinstance(answer, str) else json.dumps(answer, indent=2, ensure_ascii=False))
    return EXIT_OK


def _stream_answer(client: ServiceClient, body: dict[str, Any], *, as_json: bool) -> int:
    meta: dict[str, Any] = {}
    done: dict[str, Any] | None = None
    printed = False
    with client.stream("/v1/query", body) as events:
        for event, data in events:
            if as_json:
                print(json.dumps({"event": event, "data": data}, ensure_ascii=False), flush=True)
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
                _eprint(f"error: {error.get('message') or error.get('code') or data}")
                return EXIT_ERROR
    if done is None:
        if printed and not as_json:
            print()
        _eprint("error: the stream ended before the answer was complete")
        return EXIT_ERROR
    if not as_json:
        print("\n" if printed else "", end="")
        print()
        cited = set(done.get("cited") or [])
        citations = [
            {**c, "cited": c.get("cited") or c.get("number") in cited}
            for c in meta.get("citations") or []
        ]
        _print_details({**meta, **done, "citations": citations}, citations_key="citations")
    return EXIT_OK


# --------------------------------------------------------------------------- output


def _print_details(answer: dict[str, Any], *, citations_key: str) -> None:
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
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 1].rstrip() + "…"


def _eprint(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _unreachable_message(url: str, reason: str) -> str:
    return (
        f"error: cannot reach the ragserve service at {url} ({reason}).\n"
        "Start it with `make serve`, or point --url / RAGSERVE_URL at a running one."
    )


@contextmanager
def _log_to_stderr() -> Iterator[None]:
    """Show the loaders' warnings (skipped files) for the duration of one command."""
    logger = logging.getLogger("ragserve")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


# --------------------------------------------------------------------------- helpers


def _batches(
    documents: Iterable[DocumentIn], size: int, max_bytes: int
) -> Iterator[tuple[list[DocumentIn], bytes]]:
    """``(documents, request body)`` runs of at most ``size`` documents whose encoded body
    stays within ``max_bytes`` (unless one document alone is larger: it goes alone)."""
    batch: list[DocumentIn] = []
    parts: list[bytes] = []
    total = 0
    for doc in documents:
        part = json.dumps(
            doc.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")
        if batch and (len(batch) >= size or total + len(part) + 1 > max_bytes):
            yield batch, _documents_body(parts)
            batch, parts, total = [], [], 0
        batch.append(doc)
        parts.append(part)
        total += len(part) + 1
    if batch:
        yield batch, _documents_body(parts)


def _documents_body(parts: list[bytes]) -> bytes:
    return b'{"documents":[' + b",".join(parts) + b"]}"


def _parse_filters(items: list[str]) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--filter needs KEY=VALUE, got {item!r}")
        value = _filter_value(raw)
        if key in filters:
            previous = filters[key]
            filters[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            filters[key] = value
    return filters


def _filter_value(raw: str) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, (str, int, float, bool)) else raw


def _sse_events(lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """Parse a text/event-stream into ``(event, data)``; data is JSON-decoded when it can be."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    parsed: Any = json.loads(text)
                except ValueError:
                    parsed = text
                yield event, parsed
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
    if data:  # a final event without the blank line
        text = "\n".join(data)
        try:
            yield event, json.loads(text)
        except ValueError:
            yield event, text


def _api_error(response: httpx.Response) -> ApiError:
    code, message = "http_error", f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", code))
        message = str(body["error"].get("message", message))
    elif isinstance(body, dict) and "detail" in body:
        message = body["detail"] if isinstance(body["detail"], str) else json.dumps(body["detail"])
    elif response.text.strip():
        message = f"HTTP {response.status_code}: {response.text.strip()[:500]}"
    return ApiError(response.status_code, code, message, _retry_after(response))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _describe(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed: {text}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out: {text}"
    return text



if __name__ == "__main__":
    sys.exit(main())
