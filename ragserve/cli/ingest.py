"""``ragserve ingest PATH...``: load files and folders, send them in batches.

Exit status: 0 every batch was ingested; 1 some batches failed; 2 a path does not exist,
nothing could be loaded, or every batch failed. A failed batch is reported with the server's
message and the rest go on; retries (by the client) are safe because ingestion is idempotent.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ragserve.cli.options import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PARTIAL,
    Context,
    non_negative_int,
    positive_int,
)
from ragserve.cli.output import eprint
from ragserve.cli.progress import Progress
from ragserve.client import MAX_ATTEMPTS, ServiceUnreachableError
from ragserve.errors import RagServeError
from ragserve.ingest.loaders import load_documents
from ragserve.schemas import DocumentIn

__all__ = ["register", "run", "batches"]

SUPPORTED = ".md .rst .txt .py .json .jsonl .yaml"


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "ingest", parents=parents, help="load files and send them to the service"
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    parser.add_argument(
        "--batch-size", type=positive_int, default=16, help="documents per request"
    )
    parser.add_argument(
        "--max-batch-bytes",
        type=positive_int,
        default=8_000_000,
        help="also start a new batch before a request body passes this many bytes",
    )
    parser.add_argument("--root", type=Path, default=None, help="document ids are relative to it")
    parser.add_argument(
        "--retries", type=non_negative_int, default=MAX_ATTEMPTS - 1,
        help=f"per failed batch, at most {MAX_ATTEMPTS - 1} (default {MAX_ATTEMPTS - 1})",
    )
    parser.add_argument(
        "--backoff", type=float, default=0.5, help="first retry delay in seconds (doubles)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress display")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        eprint(f"error: no such file or folder: {', '.join(missing)}")
        return EXIT_ERROR
    started = time.perf_counter()
    documents = list(load_documents(args.paths, root=args.root))
    if not documents:
        eprint(f"error: no documents to ingest (supported: {SUPPORTED})")
        return EXIT_ERROR
    totals = {"created": 0, "updated": 0, "unchanged": 0}
    chunks_embedded = failed_batches = failed_docs = 0
    runs = list(batches(documents, args.batch_size, args.max_batch_bytes))
    attempts = min(args.retries, MAX_ATTEMPTS - 1) + 1
    with ctx.client(max_attempts=attempts, backoff_s=args.backoff) as client, Progress(
        total=len(documents), desc="ingest", unit="doc", disable=args.no_progress
    ) as progress:
        for number, batch in enumerate(runs, start=1):
            try:
                answer = client.ingest(batch)
            except ServiceUnreachableError:
                raise  # no batch after this one would get through either
            except RagServeError as exc:
                failed_batches += 1
                failed_docs += len(batch)
                progress.write(
                    f"error: batch {number}/{len(runs)} ({batch[0].id} …, {len(batch)} "
                    f"documents) failed with HTTP {exc.status_code}: {exc.message}"
                )
            else:
                for result in answer.documents:
                    totals[result.status] += 1
                chunks_embedded += answer.chunks_embedded
            progress.update(len(batch))
    elapsed = time.perf_counter() - started
    sent = len(documents) - failed_docs
    print(
        f"ingested {sent} of {len(documents)} documents in {len(runs)} batches: "
        f"{totals['created']} created, {totals['updated']} updated, "
        f"{totals['unchanged']} unchanged; {chunks_embedded} chunks embedded; {elapsed:.2f} s"
    )
    if failed_batches:
        eprint(f"error: {failed_batches} batches ({failed_docs} documents) failed")
        return EXIT_ERROR if sent == 0 else EXIT_PARTIAL
    return EXIT_OK


def batches(documents: Iterable[DocumentIn], size: int, max_bytes: int
            ) -> Iterator[list[DocumentIn]]:
    """Runs of at most ``size`` documents whose request body stays within ``max_bytes``
    (a document larger than that alone goes alone). Sizes are those of the client's compact
    UTF-8 JSON: ``{"documents":[doc,doc,...]}``."""
    envelope = len(b'{"documents":[]}')
    batch: list[DocumentIn] = []
    total = envelope
    for doc in documents:
        size_of_doc = len(json.dumps(
            doc.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")) + (1 if batch else 0)  # the comma before it
        if batch and (len(batch) >= size or total + size_of_doc > max_bytes):
            yield batch
            batch, total = [], envelope
            size_of_doc -= 1
        batch.append(doc)
        total += size_of_doc
    if batch:
        yield batch
