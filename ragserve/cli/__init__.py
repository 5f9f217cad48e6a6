"""``ragserve``: a command-line client for the running service (over ``ragserve.client``).

    ragserve ingest docs/ notes.md [--batch-size 16] [--root DIR]
    ragserve query "How are chunks sized?" [--top-k 20] [--rerank-top-n 5] [--max-tokens 256]
                   [--filter source=docs/a.md ...] [--search | --stream] [--json]
    ragserve health
    ragserve eval path/to/beir/dataset [--service]
    ragserve index corpus.jsonl docs/ [--config configs/local.yaml] [--address auto]
                   [--concurrency 1,4] [--batch-size 64]     (Ray Data; no service needed)

``--url`` (env ``RAGSERVE_URL``, default http://127.0.0.1:8000), ``--api-key`` (env
``RAGSERVE_API_KEY``, sent as ``Authorization: Bearer``) and ``--timeout`` go before or after
the command.

Exit codes: 0 success; 1 ingestion finished but some batches failed; 2 the server answered
with an error (``error: <message>`` on stderr), an option was rejected, a path is missing,
nothing could be ingested, or bad usage; 3 the service could not be reached; 130 interrupted;
141 stdout was closed by its reader (``ragserve ... | head``), ended quietly.

Calls are retried by the client (at most three tries: connection errors, timeouts, 429, 503),
which is safe because every route is idempotent: a re-sent document keeps its ids and is
answered ``unchanged``. Progress goes to stderr: a bar on a terminal, else a few plain lines.
"""

from ragserve.cli.app import build_parser, main

__all__ = ["main", "build_parser"]
