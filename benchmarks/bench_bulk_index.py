"""Bulk indexing (Ray Data, ``graphs.indexing``) against the online ingestion path
(``POST /v1/documents`` of the running service) on the same corpus, on one node.

    .venv/bin/python benchmarks/bench_bulk_index.py --corpus ../shared/data/scifact --docs 2000

Both use the same config (``--config``, default configs/local.yaml: the embedder, chunking and
retriever settings), each into its own Qdrant local folder in a temp dir:

1. online: ``serve run`` of the search-only graph, then the documents (read by the loaders
   that ``ragserve ingest`` uses) posted ``--http-batch`` at a time, one request after another,
   as ``ragserve ingest`` does; the app is stopped afterwards (it holds its Qdrant folder);
2. bulk: ``python -m graphs.indexing`` in a fresh process (its own local Ray).

Prints chunks/s for each: the online figure from the first request to the last answer; the bulk
one both for the job (reading to last write, as its summary reports) and for the whole command
including Ray's start and the embedding actors' model load.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT, free_port, wait_http  # noqa: E402


def _write_corpus(source: Path, n: int, out: Path) -> int:
    lines = []
    with (source / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(line)
            if len(lines) >= n:
                break
    out.write_text("".join(lines), encoding="utf-8")
    return len(lines)


def _online(cfg: dict, corpus: Path, tmp: Path, http_batch: int) -> dict:
    from ragserve.ingest.loaders import load_documents

    port = free_port()
    cfg = json.loads(json.dumps(cfg))
    cfg["http_options"] = {**cfg.get("http_options", {}), "host": "127.0.0.1", "port": port}
    cfg.setdefault("logging_config", {}).update(enable_access_log=False, log_level="WARNING")
    app = cfg["applications"][0]
    app["import_path"] = "graphs.rag:build_search_app"  # no generator: ingestion only
    app["args"].setdefault("retriever", {}).setdefault("config", {})["path"] = str(tmp / "online")
    cfg_path = tmp / "online.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    docs = [d.model_dump(mode="json") for d in load_documents([corpus])]
    serve_bin = str(Path(sys.executable).with_name("serve"))
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen([serve_bin, "run", "--address", "local", str(cfg_path)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/readyz", timeout_s=600, proc=proc)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # /readyz answers 503 until every stage is up
            try:
                if httpx.get(base + "/readyz", timeout=30).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        chunks = 0
        with httpx.Client(base_url=base, timeout=600) as c:
            t0 = time.perf_counter()
            for i in range(0, len(docs), http_batch):
                r = c.post("/v1/documents", json={"documents": docs[i:i + http_batch]})
                r.raise_for_status()
                chunks += r.json()["chunks_embedded"]
            seconds = time.perf_counter() - t0
        return {"documents": len(docs), "chunks": chunks, "seconds": seconds}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _bulk(config: Path, corpus: Path, tmp: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "graphs.indexing", str(corpus), "--config", str(config),
               "--qdrant-path", str(tmp / "bulk"), "--json", "--quiet", *extra]
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        raise SystemExit(f"bulk job exited with {done.returncode}")
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    return {**summary, "wall_seconds": wall, "command": " ".join(command[1:])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="../shared/data/scifact", help="BEIR dataset folder")
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--config", default="configs/local.yaml")
    ap.add_argument("--http-batch", type=int, default=16,
                    help="documents per POST (ragserve ingest's default)")
    ap.add_argument("--concurrency", default="1,2", help="embedding actors of the bulk job")
    ap.add_argument("--batch-size", default="64", help="chunks per embedding call (bulk)")
    ap.add_argument("--skip-online", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ragserve-bulk-bench-"))
    corpus = tmp / "corpus.jsonl"
    n = _write_corpus(Path(args.corpus), args.docs, corpus)
    config = (ROOT / args.config).resolve()
    cfg = yaml.safe_load(config.read_text())
    print(f"corpus: {n} SciFact documents; config {args.config}; {os.cpu_count()} CPUs")

    if not args.skip_online:
        online = _online(cfg, corpus, tmp, args.http_batch)
        print(f"online  POST /v1/documents ({args.http_batch} docs/request): "
              f"{online['documents']} documents, {online['chunks']} chunks in "
              f"{online['seconds']:.1f} s = {online['chunks'] / online['seconds']:.1f} chunks/s")
    bulk = _bulk(config, corpus, tmp, ["--concurrency", args.concurrency,
                                       "--batch-size", args.batch_size])
    print(f"bulk    graphs.indexing (concurrency {args.concurrency}, batch {args.batch_size}): "
          f"{bulk['documents']} documents, {bulk['chunks']} chunks in {bulk['seconds']:.1f} s "
          f"= {bulk['chunks_per_s']:.1f} chunks/s (job); whole command incl. Ray start and "
          f"model load {bulk['wall_seconds']:.1f} s = "
          f"{bulk['chunks'] / bulk['wall_seconds']:.1f} chunks/s; failed {len(bulk['failed'])}")
    if not args.skip_online:
        print(f"speed-up (job vs online): {bulk['chunks_per_s'] / (online['chunks'] / online['seconds']):.2f}x"
              f"; same chunk count: {bulk['chunks'] == online['chunks']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
