"""The ``ragserve`` CLI against a real HTTP server that answers like the service.

The server is FastAPI under uvicorn on 127.0.0.1 (a free port, a background thread). It
records every request and can be scripted to fail, so batching, retries, exit codes and
printed output are checked end to end over real HTTP, through ``ragserve.client``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ragserve.cli import main
from ragserve.cli.progress import Progress

ROOT = Path(__file__).resolve().parents[2]

CITATIONS = [
    {
        "number": 1, "doc_id": "docs/guide.md", "chunk_id": "c1", "score": 0.9123,
        "text": "Chunks are sized by content type.\nTechnical text uses about 1000 tokens " * 3,
        "metadata": {"source": "docs/guide.md"},
    },
    {
        "number": 2, "doc_id": "docs/faq.md", "chunk_id": "c2", "score": 0.5,
        "text": "Overlap is 15 %.", "metadata": {},
    },
]
TIMINGS = {"embed_ms": 1.5, "retrieve_ms": 2.25, "rerank_ms": 10.0, "generate_ms": 120.0,
           "total_ms": 134.0}
BACKENDS = {"embedder": "minilm", "retriever": "qdrant-local", "reranker": "lexical_fusion",
            "generator": "extractive"}


class FakeService:
    """State behind the fake HTTP API: recorded requests, scripted failures, stored docs."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.scripted: dict[str, list[tuple[int, Any, dict[str, str]]]] = defaultdict(list)
        self.store: dict[str, str] = {}
        self.degraded = False
        self.results: list[dict[str, Any]] = CITATIONS

    def fail(self, path: str, status: int, body: Any, times: int = 1,
             headers: dict[str, str] | None = None) -> None:
        self.scripted[path].extend([(status, body, headers or {})] * times)

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


NO_WAIT = {"Retry-After": "0"}


def build_app(service: FakeService) -> FastAPI:
    app = FastAPI()

    async def record(request: Request) -> JSONResponse | None:
        body = await request.json() if request.method == "POST" else None
        service.requests.append(
            {"path": request.url.path, "body": body, "headers": dict(request.headers)}
        )
        if service.scripted[request.url.path]:
            status, payload, headers = service.scripted[request.url.path].pop(0)
            return JSONResponse(payload, status_code=status, headers=headers)
        return None

    @app.post("/v1/documents")
    async def documents(request: Request):
        if (scripted := await record(request)) is not None:
            return scripted
        results, embedded = [], 0
        for doc in service.requests[-1]["body"]["documents"]:
            digest = hashlib.sha256(doc["text"].encode()).hexdigest()
            previous = service.store.get(doc["id"])
            status = (
                "created" if previous is None else "unchanged" if previous == digest else "updated"
            )
            chunks = 1 + len(doc["text"]) // 200
            embedded += 0 if status == "unchanged" else chunks
            service.store[doc["id"]] = digest
            results.append({"id": doc["id"], "status": status, "chunks": chunks})
        return {"documents": results, "chunks_embedded": embedded, "timings_ms": {"total": 1.0}}

    @app.post("/v1/search")
    async def search(request: Request):
        if (scripted := await record(request)) is not None:
            return scripted
        return {"results": service.results, "timings": TIMINGS, "backends": BACKENDS,
                "degraded": False, "warnings": []}

    @app.post("/v1/query")
    async def query(request: Request):
        if (scripted := await record(request)) is not None:
            return scripted
        body = service.requests[-1]["body"]
        if body.get("stream"):
            return StreamingResponse(_sse(body["query"], service), media_type="text/event-stream")
        warnings = ["reranker fell back to lexical_fusion"] if service.degraded else []
        return {
            "answer": "Chunks are sized by content type [1].",
            "citations": [{**CITATIONS[0], "cited": True}, CITATIONS[1]], "timings": TIMINGS,
            "backends": BACKENDS, "degraded": service.degraded, "warnings": warnings,
            "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129},
        }

    @app.get("/readyz")
    async def readyz(request: Request):
        if (scripted := await record(request)) is not None:
            return scripted
        return {"ready": True, "stages": {"embedder": "ok", "generator": "ok"}}

    return app


async def _sse(question: str, service: FakeService):
    def event(name: str, data: Any) -> str:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n"

    yield ": keep-alive comment\n\n"
    yield event("meta", {"citations": CITATIONS, "backends": BACKENDS, "degraded": True})
    for delta in ["Chunks ", "are ", "sized ", "[1]."]:
        yield event("token", {"delta": delta})
    if question == "break":
        yield event("error", {"code": "stage_unavailable", "message": "generator went away"})
        return
    if question == "cut":
        return  # the connection ends without a done event
    yield event(
        "done",
        {"usage": {"prompt_tokens": 50, "completion_tokens": 4}, "timings": TIMINGS, "cited": [2]},
    )


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FakeService]]:
    service = FakeService()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(build_app(service), log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", service
    uv.should_exit = True
    thread.join(timeout=5)
    sock.close()


@pytest.fixture()
def svc(server: tuple[str, FakeService], monkeypatch: pytest.MonkeyPatch) -> FakeService:
    url, service = server
    service.reset()
    monkeypatch.setenv("RAGSERVE_URL", url)  # read by main(); tests may still pass --url
    monkeypatch.delenv("RAGSERVE_API_KEY", raising=False)
    return service


@pytest.fixture()
def docs_dir(tmp_path: Path) -> Path:
    for i in range(5):
        (tmp_path / f"doc{i}.md").write_text(f"# Doc {i}\n\n" + "Some text. " * (i + 1))
    return tmp_path


def _ingest(docs_dir: Path, *extra: str) -> int:
    return main(["ingest", str(docs_dir), "--root", str(docs_dir), "--no-progress",
                 "--backoff", "0", *extra])


# --------------------------------------------------------------------------- ingest


def test_ingest_sends_batches_and_prints_a_summary(
    svc: FakeService, docs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _ingest(docs_dir, "--batch-size", "2") == 0
    calls = svc.calls("/v1/documents")
    assert [len(c["body"]["documents"]) for c in calls] == [2, 2, 1]
    sent = [d for c in calls for d in c["body"]["documents"]]
    assert [d["id"] for d in sent] == [f"doc{i}.md" for i in range(5)]
    assert sent[0] == {
        "id": "doc0.md", "text": "# Doc 0\n\nSome text. ",
        "metadata": {"source": "doc0.md", "title": "Doc 0"}, "content_type": "technical",
    }
    out = capsys.readouterr().out
    assert "ingested 5 of 5 documents in 3 batches: 5 created, 0 updated, 0 unchanged" in out
    assert "5 chunks embedded" in out

    # idempotent: sending the same files again changes nothing
    (docs_dir / "doc4.md").write_text("# Doc 4\n\nEdited.")
    assert _ingest(docs_dir, "--batch-size", "16") == 0
    assert len(svc.calls("/v1/documents")) == 4
    assert "0 created, 1 updated, 4 unchanged; 1 chunks embedded" in capsys.readouterr().out


def test_ingest_batches_also_by_request_bytes(svc: FakeService, tmp_path: Path) -> None:
    # non-ASCII text: bytes, not characters, decide the request size
    for i in range(4):
        (tmp_path / f"jp{i}.txt").write_text("日本語" * 1000)  # 9 000 UTF-8 bytes each
    assert _ingest(tmp_path, "--max-batch-bytes", "20000") == 0
    calls = svc.calls("/v1/documents")
    assert [len(c["body"]["documents"]) for c in calls] == [2, 2]
    assert calls[0]["body"]["documents"][0]["text"] == "日本語" * 1000
    assert all(int(c["headers"]["content-length"]) <= 20000 for c in calls)


def test_ingest_shows_progress_and_skipped_files(
    svc: FakeService, docs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (docs_dir / "blob.txt").write_bytes(b"\x00\x01binary")
    assert main(["ingest", str(docs_dir), "--root", str(docs_dir), "--batch-size", "1"]) == 0
    err = capsys.readouterr().err
    assert "skipping blob.txt: binary file" in err
    # stderr is not a terminal here: plain lines, one per tenth at most, no bar redraws
    assert "\r" not in err and "it/s" not in err
    progress = [line for line in err.splitlines() if line.startswith("ingest: ")]
    assert 1 <= len(progress) <= 5
    assert all(re.fullmatch(r"ingest: [1-5]/5 doc \(\d+ %\), \d+\.\d s", p) for p in progress)
    assert progress[-1].startswith("ingest: 5/5 doc (100 %)")


def test_ingest_retries_503_and_429_then_succeeds(
    svc: FakeService, docs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svc.fail("/v1/documents", 503, _error("stage_unavailable", "embedder busy"))
    svc.fail("/v1/documents", 429, _error("rate_limited", "slow down"), headers=NO_WAIT)
    assert _ingest(docs_dir, "--batch-size", "3") == 0
    calls = svc.calls("/v1/documents")
    assert len(calls) == 4  # 2 failures + 2 batches
    # the retried request is the same batch each time, under one request id
    assert all(c["body"] == calls[0]["body"] for c in calls[:3])
    assert len({c["headers"]["x-request-id"] for c in calls[:3]}) == 1
    assert calls[3]["headers"]["x-request-id"] != calls[0]["headers"]["x-request-id"]
    assert "5 created" in capsys.readouterr().out


def test_ingest_gives_up_after_three_tries(
    svc: FakeService, docs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svc.fail("/v1/documents", 503, _error("stage_unavailable", "embedder down"), times=3)
    # more retries than the client's three tries in all are capped
    assert _ingest(docs_dir, "--batch-size", "3", "--retries", "9") == 1  # partial failure
    calls = svc.calls("/v1/documents")
    assert len(calls) == 3 + 1  # 3 tries for batch 1, then batch 2
    out, err = capsys.readouterr()
    assert "batch 1/2" in err and "HTTP 503: embedder down" in err
    assert "ingested 2 of 5 documents" in out

    svc.reset()
    svc.fail("/v1/documents", 503, _error("stage_unavailable", "embedder down"))
    assert _ingest(docs_dir, "--batch-size", "3", "--retries", "0") == 1
    assert len(svc.calls("/v1/documents")) == 2  # no retry: batch 1 failed once


def test_ingest_skips_a_rejected_batch_without_retrying(
    svc: FakeService, docs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svc.fail("/v1/documents", 413, _error("payload_too_large", "request has too many characters"))
    assert _ingest(docs_dir, "--batch-size", "2") == 1
    assert [len(c["body"]["documents"]) for c in svc.calls("/v1/documents")] == [2, 2, 1]
    err = capsys.readouterr().err
    assert "request has too many characters" in err
    assert "1 batches (2 documents) failed" in err


def test_ingest_exit_code_when_every_batch_fails(
    svc: FakeService, docs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svc.fail("/v1/documents", 422, _error("invalid_request", "bad document"), times=10)
    assert _ingest(docs_dir, "--batch-size", "2") == 2
    assert len(svc.calls("/v1/documents")) == 3
    assert capsys.readouterr().err.count("bad document") == 3


def test_ingest_nothing_to_load(svc: FakeService, tmp_path: Path, capsys) -> None:
    assert _ingest(tmp_path) == 2
    assert "no documents to ingest" in capsys.readouterr().err
    assert svc.requests == []


def test_ingest_a_missing_path_fails_before_sending(
    svc: FakeService, docs_dir: Path, capsys
) -> None:
    missing = docs_dir / "not-there.md"
    assert main(["ingest", str(docs_dir), str(missing), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == f"error: no such file or folder: {missing}"
    assert svc.requests == []


# --------------------------------------------------------------------------- query


def test_query_prints_answer_citations_timings(
    svc: FakeService, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    svc.degraded = True
    monkeypatch.setenv("RAGSERVE_API_KEY", "env-key")
    code = main(["query", "How are chunks sized?", "--top-k", "8", "--rerank-top-n", "3",
                 "--max-tokens", "64", "--filter", "source=docs/guide.md",
                 "--filter", "year=2024", "--filter", "tags=a", "--filter", "tags=b",
                 "--filter", 'code="42"'])
    assert code == 0
    (call,) = svc.calls("/v1/query")
    assert call["body"] == {
        "query": "How are chunks sized?", "top_k": 8, "rerank_top_n": 3, "max_tokens": 64,
        "filters": {"source": "docs/guide.md", "year": 2024, "tags": ["a", "b"], "code": "42"},
    }
    assert call["headers"]["authorization"] == "Bearer env-key"
    assert re.fullmatch(r"[0-9a-f]{32}", call["headers"]["x-request-id"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "Chunks are sized by content type [1]."
    assert "  [1] docs/guide.md (score 0.912, cited): Chunks are sized by content type. Tech" in out
    cite_line = next(line for line in lines if line.startswith("  [1]"))
    assert cite_line.endswith("…") and len(cite_line) < 160  # one line, shortened
    assert "  [2] docs/faq.md (score 0.500): Overlap is 15 %." in out
    assert "timings: embed 1.5 ms, retrieve 2.2 ms, rerank 10.0 ms, generate 120.0 ms" in out
    assert "backends: embedder=minilm, retriever=qdrant-local" in out
    assert "degraded: yes" in out and "warning: reranker fell back to lexical_fusion" in out


def test_query_json_prints_the_raw_response(svc: FakeService, capsys) -> None:
    assert main(["query", "q", "--json", "--api-key", "flag-key"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["answer"] == "Chunks are sized by content type [1]."
    assert printed["citations"][1] == CITATIONS[1] and printed["citations"][0]["cited"] is True
    assert svc.calls("/v1/query")[0]["headers"]["authorization"] == "Bearer flag-key"


def test_search_uses_the_search_endpoint(svc: FakeService, capsys) -> None:
    assert main(["query", "chunk size", "--search", "--max-tokens", "5"]) == 0
    assert svc.calls("/v1/query") == []
    (call,) = svc.calls("/v1/search")
    assert call["body"] == {"query": "chunk size"}
    assert "authorization" not in call["headers"]
    out = capsys.readouterr().out
    assert out.startswith("results:\n  [1] docs/guide.md")
    assert "degraded" not in out


def test_query_stream_prints_tokens_then_citations(svc: FakeService, capsys) -> None:
    assert main(["query", "stream me", "--stream"]) == 0
    (call,) = svc.calls("/v1/query")
    assert call["body"] == {"query": "stream me", "stream": True}
    assert call["headers"]["accept"] == "text/event-stream"
    out = capsys.readouterr().out
    assert out.startswith("Chunks are sized [1].\n\ncitations:\n  [1] docs/guide.md (score 0.912)")
    assert "  [2] docs/faq.md (score 0.500, cited): Overlap is 15 %." in out  # from done.cited
    assert "usage: 50 prompt + 4 completion tokens" in out
    assert "timings: embed 1.5 ms" in out and "degraded: yes" in out


def test_query_stream_json_prints_each_event(svc: FakeService, capsys) -> None:
    assert main(["query", "stream me", "--stream", "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["meta", "token", "token", "token", "token", "done"]
    assert events[1]["data"] == {"delta": "Chunks "}


def test_query_stream_error_event(svc: FakeService, capsys) -> None:
    assert main(["query", "break", "--stream"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith("Chunks are sized [1].")
    assert "error: generator went away" in err


def test_query_stream_cut_short(svc: FakeService, capsys) -> None:
    assert main(["query", "cut", "--stream"]) == 2
    assert "ended before the answer was complete" in capsys.readouterr().err


def test_server_error_response_exits_2(svc: FakeService, capsys) -> None:
    svc.fail("/v1/query", 422, _error("invalid_request", "unknown filter field 'year'"))
    assert main(["query", "q"]) == 2
    out, err = capsys.readouterr()
    assert err.strip() == "error: unknown filter field 'year'"
    assert out == ""
    svc.fail("/v1/query", 503, _error("stage_timeout", "generator timed out"), times=3,
             headers=NO_WAIT)
    assert main(["query", "q", "--stream"]) == 2
    assert "error: generator timed out" in capsys.readouterr().err
    assert len(svc.calls("/v1/query")) == 1 + 3  # the 503 was retried, the 422 was not


def test_options_the_request_models_reject_fail_before_sending(svc: FakeService, capsys) -> None:
    assert main(["query", " "]) == 2
    assert capsys.readouterr().err.strip() == "error: query must not be blank"
    assert main(["query", "q", "--search", "--top-k", "500"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: top_k: Input should be less than or equal to 200")
    assert svc.requests == []


def test_stream_and_search_cannot_combine(svc: FakeService, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["query", "q", "--stream", "--search"])
    assert exc.value.code == 2
    assert svc.requests == []


def test_bad_filter_is_a_usage_error(svc: FakeService, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["query", "q", "--filter", "novalue"])
    assert exc.value.code == 2
    assert "KEY=VALUE" in capsys.readouterr().err


# --------------------------------------------------------------------------- health, connection


def test_health_prints_readiness(svc: FakeService, capsys) -> None:
    assert main(["health"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "ready": True, "stages": {"embedder": "ok", "generator": "ok"}}
    svc.fail("/readyz", 503, {"ready": False, "stages": {"generator": "loading"}})
    assert main(["health"]) == 2
    err = capsys.readouterr().err
    assert "service not ready (HTTP 503)" in err and '"generator": "loading"' in err
    assert len(svc.calls("/readyz")) == 2  # a not-ready answer is not retried


def test_url_option_after_the_command_wins_over_env(
    svc: FakeService, server, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = server
    monkeypatch.setenv("RAGSERVE_URL", "http://127.0.0.1:9")
    assert main(["health", "--url", url]) == 0
    assert main(["--url", url + "/", "health"]) == 0
    assert len(svc.calls("/readyz")) == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_says_how_to_start_the_service(
    tmp_path: Path, docs_dir: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    assert main(["--url", url, "query", "q"]) == 3
    err = capsys.readouterr().err
    assert f"cannot reach the ragserve service at {url}" in err and "make serve" in err
    assert "Traceback" not in err
    started = time.monotonic()
    assert main(["--url", url, "ingest", str(docs_dir), "--backoff", "0", "--no-progress"]) == 3
    assert time.monotonic() - started < 10
    assert "make serve" in capsys.readouterr().err


# --------------------------------------------------------------------------- pipes and logs


def test_a_reader_that_closes_early_ends_the_cli_quietly(server) -> None:
    url, service = server
    service.reset()
    service.results = [{**CITATIONS[0], "text": "x" * 2000}] * 200  # far more than a pipe holds
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragserve.cli", "--url", url, "query", "q", "--search", "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # like `| head -n 1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) in (0, 141)
    assert first == b"{\n"
    assert len(service.calls("/v1/search")) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception" not in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_plain_lines_off_a_terminal_and_a_bar_on_one() -> None:
    log = io.StringIO()
    with Progress(total=1000, desc="eval", unit="q", stream=log) as progress:
        for _ in range(1000):
            progress.update(1)
        progress.write("a message")
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert "a message" in lines
    counts = [line for line in lines if line.startswith("eval: ")]
    assert len(counts) == 10  # one per tenth, not one per update
    assert all(re.fullmatch(r"eval: \d+/1000 q \(\d+ %\), \d+\.\d s", line) for line in counts)
    assert counts[0].startswith("eval: 100/1000 q (10 %)")
    assert counts[-1].startswith("eval: 1000/1000 q (100 %)")

    slow = io.StringIO()  # time also triggers a line: here every update
    with Progress(total=1000, desc="ingest", unit="doc", stream=slow, interval_s=0) as progress:
        progress.update(1)
        progress.update(1)
    assert [line.split(" ")[1] for line in slow.getvalue().splitlines()] == ["1/1000", "2/1000"]

    quiet = io.StringIO()
    with Progress(total=5, desc="ingest", unit="doc", stream=quiet, disable=True) as progress:
        progress.update(5)
    assert quiet.getvalue() == ""

    terminal = _Terminal()
    with Progress(total=3, desc="ingest", unit="doc", stream=terminal) as progress:
        progress.update(3)
    assert "\r" in terminal.getvalue() and "3/3" in terminal.getvalue()  # tqdm's bar


# --------------------------------------------------------------------------- eval --service


def test_eval_service_goes_through_the_client(
    svc: FakeService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "qrels").mkdir()
    corpus = [{"_id": "d1", "title": "Espresso", "text": "Descale every two weeks."},
              {"_id": "d2", "title": "", "text": "Etna is on Sicily."}]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in corpus))
    queries = [{"_id": "q1", "text": "descale"}, {"_id": "q2", "text": "volcano"}]
    (tmp_path / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
    (tmp_path / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    svc.results = [{**CITATIONS[0], "metadata": {"beir_id": "d1"}}]

    out_file = tmp_path / "figures.json"
    assert main(["eval", str(tmp_path), "--service", "--api-key", "k",
                 "--json", str(out_file)]) == 0
    (ingest,) = svc.calls("/v1/documents")
    assert [d["id"] for d in ingest["body"]["documents"]] == ["beir:d1", "beir:d2"]
    searches = svc.calls("/v1/search")
    assert sorted(c["body"]["query"] for c in searches) == ["descale", "volcano"]
    assert all(c["body"]["top_k"] == 100 == c["body"]["rerank_top_n"] for c in searches)
    assert all(c["headers"]["authorization"] == "Bearer k" for c in svc.requests)
    (result,) = json.loads(out_file.read_text())["results"]
    assert result["mode"] == "service" and result["ndcg@10"] == 0.5  # q1 found, q2 not
    out, err = capsys.readouterr()
    assert out.splitlines()[-1].startswith("service ")
    assert "service: 2/2 q (100 %)" in err and "\r" not in err


# --------------------------------------------------------------------------- index


def _index_args(*argv: str):
    from ragserve.cli import build_parser

    return build_parser().parse_args(["index", *argv])


def test_index_hands_its_arguments_to_the_job_module() -> None:
    from ragserve.cli.index import job_command

    args = _index_args("corpus.jsonl", "docs/", "--config", "configs/local.yaml",
                       "--concurrency", "1,4", "--batch-size", "128", "--num-gpus", "0.5",
                       "--no-resume", "--json")
    assert job_command(args) == [
        sys.executable, "-m", "graphs.indexing", "corpus.jsonl", "docs/",
        "--config", "configs/local.yaml", "--batch-size", "128", "--concurrency", "1,4",
        "--num-gpus", "0.5", "--no-resume", "--json"]
    assert job_command(_index_args("a.md")) == [sys.executable, "-m", "graphs.indexing", "a.md"]


@pytest.mark.parametrize("argv", [
    [],                                             # no source
    ["a.md", "--concurrency", "4,1"],               # min above max
    ["a.md", "--concurrency", "0"],
    ["a.md", "--concurrency", "two"],
    ["a.md", "--batch-size", "0"],
    ["a.md", "--write-batch", "-3"],
    ["a.md", "--num-gpus", "-1"],
    ["a.md", "--url", "http://x"],                  # no service options: it does not call one
])
def test_index_rejects_bad_arguments_before_starting_anything(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        _index_args(*argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_index_options_mirror_the_job_module() -> None:
    from graphs.indexing import build_parser as job_parser
    from ragserve.cli.index import FLAGS, OPTIONS

    job = {s for a in job_parser()._actions for s in a.option_strings} - {"-h", "--help"}
    assert job == {flag for flag, _ in OPTIONS} | {flag for flag, _ in FLAGS}
    # every value the CLI accepts, the job accepts too (and the reverse for bad ones)
    for argv in (["x", "--concurrency", "2"], ["x", "--concurrency", "1,3"],
                 ["x", "--num-gpus", "0.25", "--num-cpus", "2"]):
        job_parser().parse_args(argv)
        _index_args(*argv)


def test_index_streams_the_job_and_returns_its_exit_status(tmp_path, monkeypatch, capfd) -> None:
    import ragserve.cli.index as index

    (tmp_path / "fakejob.py").write_text(
        "import sys\nprint('job got', sys.argv[1:], flush=True)\n"
        "print('progress line', file=sys.stderr)\nsys.exit(1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(index, "JOB_MODULE", "fakejob")
    assert main(["index", "c.jsonl", "--tenant", "acme", "--quiet"]) == 1
    out, err = capfd.readouterr()
    assert "job got ['c.jsonl', '--tenant', 'acme', '--quiet']" in out
    assert "progress line" in err


def test_index_without_the_job_module_says_why(monkeypatch, capsys) -> None:
    import ragserve.cli.index as index

    monkeypatch.setattr(index, "JOB_MODULE", "no_such_package_here.indexing")
    assert main(["index", "c.jsonl"]) == 2
    assert "not importable" in capsys.readouterr().err
