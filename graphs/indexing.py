"""Bulk indexing on Ray Data: a corpus into the retriever without the serving graph.

    python -m graphs.indexing corpus.jsonl docs/ --config configs/local.yaml [--address auto]
    ragserve index corpus.jsonl --config configs/local.yaml          (the same, via the CLI)

or, from a notebook, ``index_corpus(["corpus.jsonl"], "configs/local.yaml")``.

What it shares with ``POST /v1/documents`` (so both paths give the same points):

* **Reading**: files and folders through ``ragserve.ingest.loaders`` (the loaders of
  ``ragserve ingest``: content types, ids, metadata, BEIR ``{"_id", "title", "text"}`` records).
  A ``.jsonl`` file whose first record carries one of the API's own document fields
  (``content_type``, ``metadata``, ``acl``) is read as the API's document shape instead, one
  ``DocumentIn`` per line.
* **Chunking**: ``chunk_document`` with a ``TokenChunker`` of the ingress's ``chunking`` config:
  the same chunks and chunk ids.
* **Skipping**: ``ragserve.pipeline.indexer.document_status`` over the stored chunk hashes, the
  rule by which the online path answers ``unchanged``.
* **Embedding**: ``SentenceTransformerEmbedder`` built from the same ``EmbedderConfig`` the
  Serve config gives the embedder stage (``dtype: auto`` is float16 on a GPU, float32 on CPU).
* **Writing**: ``QdrantRetriever.replace_documents`` built from the same ``RetrieverConfig``:
  the same sparse vectors, payloads, embedder identity check and idempotent point ids.

How: the driver reads the documents and, with ``resume``, the stored chunk hashes of their ids
(one scan). Ray Data then chunks them in tasks (documents already indexed unchanged are dropped
there), embeds the chunks in ``map_batches`` over an actor pool (``concurrency``, ``num_gpus``
per actor), and the driver writes the vectors as they stream back (``iter_batches``), whole
documents at a time, ``write_batch`` documents per ``replace_documents`` call.

One writer on purpose: Qdrant local mode lets one process open a folder, so **the serving app
must not hold the same local path while the job runs** (stop it, or index into another path or
collection). A Qdrant server has no such limit: the job can run beside the serving app.

Idempotent and resumable: every ``replace_documents`` call writes whole documents in one request,
so a job killed at any point leaves each document either fully written or not at all. Run it
again (``resume``, the default) and the documents already written are skipped as unchanged and
the rest written: the same point ids, nothing duplicated.

When ``ingress.config.cache.redis_url`` is set, the query cache's index version is advanced
after any write (as every online ingest does), so cached answers never outlive the new corpus.
The driver holds the corpus's documents in memory; split a very large corpus into several
runs (each one resumable) if it does not fit.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError

from graphs.args import RagAppArgs
from ragserve.config import ChunkingConfig, EmbedderConfig
from ragserve.errors import RagServeError
from ragserve.ingest.chunking import TokenChunker, chunk_document
from ragserve.ingest.loaders import load_documents
from ragserve.pipeline.indexer import document_status
from ragserve.retrieval.qdrant import QdrantRetriever
from ragserve.schemas import Chunk, DocumentIn, EmbedderInfo
from ragserve.security.access import Access

__all__ = [
    "IndexSummary",
    "IndexProgress",
    "FailedDocument",
    "index_corpus",
    "load_app_args",
    "read_corpus",
    "main",
]

log = logging.getLogger("ragserve.bulk_index")

_API_ONLY_FIELDS = frozenset({"content_type", "metadata", "acl"})
_ID_SCAN = 1000  # document ids per chunk_hashes_many scan


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FailedDocument:
    """A document (or a source) that was not indexed, and why."""

    source: str
    reason: str


@dataclass
class IndexProgress:
    """Where a running job stands; handed to ``progress`` after every write."""

    documents_total: int
    documents_done: int = 0
    chunks_written: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks_written / self.seconds if self.seconds > 0 else 0.0


@dataclass
class IndexSummary:
    """The outcome of one job. ``documents`` counts every document read; ``indexed`` those
    written (created or updated), ``skipped`` those already indexed unchanged, ``failed`` what
    could not be read or indexed (sources and documents, with the reason)."""

    collection: str
    documents: int = 0
    indexed: int = 0
    skipped: int = 0
    chunks: int = 0
    failed: list[FailedDocument] = field(default_factory=list)
    seconds: float = 0.0
    embedder: str = ""

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "chunks_per_s": round(self.chunks_per_s, 2)}

    def describe(self) -> str:
        return (f"indexed {self.indexed} of {self.documents} documents into "
                f"{self.collection!r}: {self.chunks} chunks, {self.skipped} unchanged skipped, "
                f"{len(self.failed)} failed; {self.seconds:.1f} s, "
                f"{self.chunks_per_s:.1f} chunks/s")


# --------------------------------------------------------------------------- config


def load_app_args(config: RagAppArgs | dict[str, Any] | str | Path | None,
                  app: str | None = None) -> tuple[RagAppArgs, dict[str, str]]:
    """``RagAppArgs`` and the app's ``runtime_env`` env vars from a Serve config file (the
    ``args:`` of application ``app``, else the first), a YAML file of args alone, a dict of
    args, or ``RagAppArgs`` itself (None: the embedded defaults)."""
    if isinstance(config, RagAppArgs):
        return config, {}
    if config is None or isinstance(config, dict):
        return RagAppArgs.model_validate(config or {}), {}
    doc = yaml.safe_load(Path(config).read_text()) or {}
    if "applications" not in doc:
        return RagAppArgs.model_validate(doc), {}
    apps = doc["applications"]
    chosen = next((a for a in apps if app is None or a.get("name") == app), None)
    if chosen is None:
        raise ValueError(f"{config}: no application named {app!r}")
    env = ((chosen.get("runtime_env") or {}).get("env_vars")) or {}
    return RagAppArgs.model_validate(chosen.get("args") or {}), {k: str(v) for k, v in env.items()}


# --------------------------------------------------------------------------- reading


class _LoaderFailures(logging.Handler):
    """Collects the loaders' "skipping X: reason" warnings as failures (the loaders skip bad
    input with a warning and go on; the summary must name it)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.failures: list[FailedDocument] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("skipping "):
            source, _, reason = message[len("skipping "):].partition(": ")
            self.failures.append(FailedDocument(source=source, reason=reason or message))


def _is_api_jsonl(path: Path) -> bool:
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            return (isinstance(record, dict) and "_id" not in record
                    and bool(_API_ONLY_FIELDS & record.keys()))
    return False


def _read_api_jsonl(path: Path, failures: list[FailedDocument]) -> Iterator[DocumentIn]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield DocumentIn.model_validate_json(raw)
            except ValidationError as exc:
                errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}"
                                   for e in exc.errors()[:3])
                failures.append(FailedDocument(where, f"invalid document ({errors})"))


def read_corpus(sources: Iterable[str | Path], *, root: Path | None = None,
                max_document_chars: int | None = None
                ) -> tuple[list[DocumentIn], list[FailedDocument]]:
    """Documents from files, folders and JSONL files (see the module docstring), and what
    could not be read, with the reason. The first of two documents with one id wins."""
    paths = [Path(s) for s in sources]
    failures: list[FailedDocument] = []
    api = [p for p in paths if p.is_file() and p.suffix.lower() == ".jsonl" and _is_api_jsonl(p)]
    rest = [p for p in paths if p not in api]
    handler = _LoaderFailures()
    loader_log = logging.getLogger("ragserve.ingest.loaders")
    loader_log.addHandler(handler)
    try:
        docs = list(load_documents(rest, root=root)) if rest else []
    finally:
        loader_log.removeHandler(handler)
    failures.extend(handler.failures)
    seen = {d.id for d in docs}
    for path in api:
        for doc in _read_api_jsonl(path, failures):
            if doc.id in seen:
                failures.append(FailedDocument(str(path), f"document id {doc.id!r} already used"))
                continue
            seen.add(doc.id)
            docs.append(doc)
    if max_document_chars is not None:
        kept = []
        for doc in docs:
            if len(doc.text) > max_document_chars:
                failures.append(FailedDocument(doc.id, f"{len(doc.text)} characters; the limit "
                                               f"is {max_document_chars}"))
            else:
                kept.append(doc)
        docs = kept
    return docs, failures


# --------------------------------------------------------------------------- Ray Data stages

# Row kinds coming out of the chunk stage.
_CHUNK, _UNCHANGED, _FAILED = "chunk", "unchanged", "failed"


def _chunk_batch(batch: dict[str, np.ndarray], *, chunking: dict[str, Any], tenant: str,
                 stored: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Documents -> one row per chunk to embed (documents whose stored chunks are already
    these, ``document_status`` says ``unchanged``, become one ``unchanged`` row instead)."""
    chunker = _chunker(json.dumps(chunking, sort_keys=True))
    out: dict[str, list[Any]] = {k: [] for k in ("kind", "doc_id", "doc_chunks", "chunk",
                                                 "text", "reason")}

    def row(kind: str, doc_id: str, n: int, chunk: str = "", text: str = "",
            reason: str = "") -> None:
        for key, value in zip(out, (kind, doc_id, n, chunk, text, reason)):
            out[key].append(value)

    for raw in batch["doc"]:
        doc = DocumentIn.model_validate_json(raw)
        try:
            chunks = chunk_document(doc, chunker, tenant)
        except Exception as exc:  # one bad document must not end the job: it is reported
            row(_FAILED, doc.id, 0, reason=f"chunking failed: {exc!r}")
            continue
        if not chunks:
            row(_FAILED, doc.id, 0, reason="no chunks (blank text)")
            continue
        if document_status(doc.id, chunks, stored.get(doc.id, {})).status == "unchanged":
            row(_UNCHANGED, doc.id, len(chunks))
            continue
        for c in chunks:
            row(_CHUNK, doc.id, len(chunks), chunk=c.model_dump_json(exclude={"text"}), text=c.text)
    return {k: np.array(v, dtype=np.int64 if k == "doc_chunks" else object)
            for k, v in out.items()}


_CHUNKERS: dict[str, TokenChunker] = {}


def _chunker(key: str) -> TokenChunker:
    # One per worker process: the tiktoken encoding loads once.
    if key not in _CHUNKERS:
        _CHUNKERS[key] = TokenChunker(ChunkingConfig.model_validate_json(key))
    return _CHUNKERS[key]


class _EmbedChunks:
    """The actor of the embed stage: one loaded ``SentenceTransformerEmbedder`` per actor,
    from the serving config's ``EmbedderConfig`` (on the actor's GPU when it has one)."""

    def __init__(self, config: dict[str, Any]) -> None:
        from ragserve.embedding import SentenceTransformerEmbedder

        self.encoder = SentenceTransformerEmbedder(EmbedderConfig.model_validate(config))
        self.encoder.warm_up()
        self.info = self.encoder.info()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        kinds = batch["kind"]
        todo = [i for i, k in enumerate(kinds) if k == _CHUNK]
        vectors = np.zeros((len(kinds), self.info.dimension), dtype=np.float32)
        if todo:
            texts = [str(batch["text"][i]) for i in todo]
            vectors[todo] = self.encoder.encode(texts, ["passage"] * len(texts))
        return {**batch, "vector": vectors,
                "embedder": np.array([self.info.model_dump_json()] * len(kinds), dtype=object)}


# --------------------------------------------------------------------------- the job


def _gpu_usable(config: EmbedderConfig) -> bool:
    """Whether the embedder config can run on a GPU at all (ONNX Runtime runs on the CPU)."""
    return config.runtime == "torch" and config.device in ("auto", "cuda")


def _ensure_ray(address: str | None, env_vars: dict[str, str]) -> bool:
    """Connect to (or start) Ray unless this process already has; True when we did."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address, runtime_env={"env_vars": env_vars} if env_vars else None,
             log_to_driver=False, include_dashboard=False if address is None else None)
    return True


def index_corpus(
    source: str | Path | Iterable[str | Path],
    args_or_config: RagAppArgs | dict[str, Any] | str | Path | None = None,
    *,
    app: str | None = None,
    batch_size: int = 64,
    concurrency: int | tuple[int, int] = (1, 1),
    num_gpus: float | None = None,
    num_cpus: float = 1.0,
    chunk_batch_size: int = 64,
    write_batch: int = 128,
    resume: bool = True,
    tenant: str = "default",
    root: Path | None = None,
    address: str | None = None,
    progress: Callable[[IndexProgress], None] | None = None,
) -> IndexSummary:
    """Index ``source`` (files, folders, JSONL; one or a list) into the retriever of
    ``args_or_config`` (a Serve config file, an args file or dict, or ``RagAppArgs``).

    ``batch_size`` chunks per embedding call; ``concurrency`` embedding actors (n, or
    ``(min, max)`` to let Ray Data scale the pool); ``num_gpus`` per actor (None: 1 when the
    cluster has GPUs and the embedder config can use one, else 0); ``write_batch`` documents per
    write. ``resume`` skips documents already indexed unchanged (False re-embeds and rewrites
    them: the same ids, so still no duplicates). ``progress`` is called after every write; an
    exception it raises stops the job (what was written stays, and a rerun resumes).

    Connects to Ray at ``address`` unless this process already has (None starts a local one).
    Safe to call from a notebook with a running event loop (the job then runs in a thread).
    """
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    args, env_vars = load_app_args(args_or_config, app)
    _ensure_ray(address, env_vars)
    job = _Job(args, sources, env_vars=env_vars, batch_size=batch_size, concurrency=concurrency,
               num_gpus=num_gpus, num_cpus=num_cpus, chunk_batch_size=chunk_batch_size,
               write_batch=write_batch, resume=resume, tenant=tenant, root=root,
               progress=progress)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return job.run()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a notebook's loop is running here
        return pool.submit(job.run).result()


class _Job:
    def __init__(self, args: RagAppArgs, sources: list[str | Path], *, env_vars: dict[str, str],
                 batch_size: int, concurrency: int | tuple[int, int], num_gpus: float | None,
                 num_cpus: float, chunk_batch_size: int, write_batch: int, resume: bool,
                 tenant: str, root: Path | None,
                 progress: Callable[[IndexProgress], None] | None) -> None:
        if batch_size < 1 or write_batch < 1 or chunk_batch_size < 1:
            raise ValueError("batch sizes must be at least 1")
        self.args, self.sources, self.env_vars = args, sources, env_vars
        self.batch_size, self.concurrency = batch_size, concurrency
        self.num_gpus, self.num_cpus = num_gpus, num_cpus
        self.chunk_batch_size, self.write_batch = chunk_batch_size, write_batch
        self.resume, self.access, self.root = resume, Access(tenant=tenant), root
        self.progress = progress
        self.loop: asyncio.AbstractEventLoop | None = None  # made by run(), on its thread
        # The writer's retriever: the serving config's, without the in-memory lexical mirror,
        # which only searches use (it would read the whole collection at start-up).
        self.retriever = QdrantRetriever(
            args.retriever.config.model_copy(update={"local_sparse_index": False}))

    def _await(self, coro: Any) -> Any:
        # One loop on this thread: local mode's SQLite connections stay on the thread that
        # opened them.
        assert self.loop is not None
        return self.loop.run_until_complete(coro)

    def run(self) -> IndexSummary:
        started = time.perf_counter()
        self.loop = asyncio.new_event_loop()
        summary = IndexSummary(collection=self.retriever.collection)
        limits = self.args.ingress.config.limits
        docs, failures = read_corpus(self.sources, root=self.root,
                                     max_document_chars=limits.max_document_chars)
        summary.documents = len(docs)
        summary.failed.extend(failures)
        written = False
        try:
            self._await(self.retriever.warm_up())
            stored = self._stored_hashes([d.id for d in docs]) if self.resume and docs else {}
            if docs:
                written = self._pipeline(docs, stored, summary, started)
        finally:
            try:
                if written:
                    self._await(self._advance_cache_version())
                self._await(self.retriever.aclose())
            finally:
                self.loop.close()
        summary.seconds = time.perf_counter() - started
        return summary

    def _stored_hashes(self, ids: list[str]) -> dict[str, dict[str, str]]:
        health = self._await(self.retriever.health())
        if not health.get("collection_exists"):
            return {}
        stored: dict[str, dict[str, str]] = {}
        for i in range(0, len(ids), _ID_SCAN):
            found = self._await(self.retriever.chunk_hashes_many(ids[i:i + _ID_SCAN],
                                                                 access=self.access))
            stored.update({k: v for k, v in found.items() if v})
        return stored

    def _dataset(self, docs: list[DocumentIn], stored: dict[str, dict[str, str]]):
        import ray

        embedder = self.args.embedder.config
        num_gpus = self.num_gpus
        if num_gpus is None:
            num_gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 and _gpu_usable(embedder) else 0
        blocks = max(1, min(len(docs) // self.chunk_batch_size + 1, 64))
        ds = ray.data.from_items([{"doc": d.model_dump_json()} for d in docs],
                                 override_num_blocks=blocks)
        ds = ds.map_batches(
            _chunk_batch, batch_size=self.chunk_batch_size, batch_format="numpy",
            fn_kwargs={"chunking": self.args.ingress.config.chunking.model_dump(mode="json"),
                       "tenant": self.access.tenant, "stored": stored},
            num_cpus=0.5)
        low, high = ((self.concurrency, self.concurrency) if isinstance(self.concurrency, int)
                     else self.concurrency)
        return ds.map_batches(
            _EmbedChunks, batch_size=self.batch_size, batch_format="numpy",
            fn_constructor_kwargs={"config": embedder.model_dump(mode="json")},
            compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),
            num_gpus=num_gpus or None,
            num_cpus=0 if num_gpus else self.num_cpus)

    def _pipeline(self, docs: list[DocumentIn], stored: dict[str, dict[str, str]],
                  summary: IndexSummary, started: float) -> bool:
        state = IndexProgress(documents_total=summary.documents, failed=len(summary.failed))
        pending: dict[str, list[tuple[Chunk, list[float]]]] = {}
        ready: list[tuple[str, list[Chunk], list[list[float]]]] = []
        written = False

        def flush() -> None:
            nonlocal written
            if not ready:
                return
            self._await(self.retriever.replace_documents(ready, access=self.access))
            written = True
            n_chunks = sum(len(c) for _, c, _ in ready)
            summary.indexed += len(ready)
            summary.chunks += n_chunks
            state.documents_done += len(ready)
            state.chunks_written += n_chunks
            ready.clear()
            report()

        def report() -> None:
            state.skipped, state.failed = summary.skipped, len(summary.failed)
            state.seconds = time.perf_counter() - started
            if self.progress is not None:
                self.progress(state)

        batches = iter(self._dataset(docs, stored).iter_batches(batch_size=None,
                                                                 batch_format="numpy"))
        try:
            self._consume(batches, pending, ready, summary, state, flush, report)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:  # stops the streaming execution when the job is cut short
                close()
        flush()
        report()
        if pending:  # cannot happen unless a stage lost rows: say so rather than hide it
            for doc_id in pending:
                summary.failed.append(FailedDocument(doc_id, "incomplete: chunks lost in flight"))
        return written

    def _consume(self, batches: Iterator[dict[str, np.ndarray]],
                 pending: dict[str, list[tuple[Chunk, list[float]]]],
                 ready: list[tuple[str, list[Chunk], list[list[float]]]],
                 summary: IndexSummary, state: IndexProgress,
                 flush: Callable[[], None], report: Callable[[], None]) -> None:
        info: EmbedderInfo | None = None
        for batch in batches:
            for i, kind in enumerate(batch["kind"]):
                doc_id = str(batch["doc_id"][i])
                if kind == _UNCHANGED:
                    summary.skipped += 1
                    state.documents_done += 1
                    continue
                if kind == _FAILED:
                    summary.failed.append(FailedDocument(doc_id, str(batch["reason"][i])))
                    state.documents_done += 1
                    continue
                if info is None:
                    info = EmbedderInfo.model_validate_json(str(batch["embedder"][i]))
                    # The identity check: refuses a collection built with another model.
                    self._await(self.retriever.ensure_collection(info))
                    summary.embedder = info.vectors_id
                chunk = Chunk.model_validate({**json.loads(str(batch["chunk"][i])),
                                              "text": str(batch["text"][i])})
                parts = pending.setdefault(doc_id, [])
                parts.append((chunk, batch["vector"][i].tolist()))
                if len(parts) == int(batch["doc_chunks"][i]):
                    parts.sort(key=lambda p: p[0].chunk_index)
                    del pending[doc_id]
                    ready.append((doc_id, [c for c, _ in parts], [v for _, v in parts]))
                    if len(ready) >= self.write_batch:
                        flush()
            report()

    async def _advance_cache_version(self) -> None:
        cache = self.args.ingress.config.cache
        if cache.redis_url is None:
            return
        from ragserve.cache import CacheLayer

        layer = CacheLayer.from_config(cache)
        try:
            if await layer.store.incr(layer.keys.index_version) is None:
                log.warning("could not advance the cache's index version: cached answers may "
                            "predate this job until their TTL")
        finally:
            await layer.aclose()


# --------------------------------------------------------------------------- command line


def _concurrency(value: str) -> int | tuple[int, int]:
    parts = value.split(",")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN,MAX, not {value!r}") from None
    if len(numbers) == 1 and numbers[0] >= 1:
        return numbers[0]
    if len(numbers) == 2 and 1 <= numbers[0] <= numbers[1]:
        return numbers[0], numbers[1]
    raise argparse.ArgumentTypeError(f"expected N or MIN,MAX with 1 <= MIN <= MAX, not {value!r}")


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m graphs.indexing",
        description="Bulk-index files, folders or JSONL into the retriever with Ray Data.")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="files, folders or .jsonl files")
    p.add_argument("--config", default=None,
                   help="Serve config (configs/<file>.yaml) or args YAML; default: embedded defaults")
    p.add_argument("--app", default=None, help="application name in the Serve config")
    p.add_argument("--address", default=None,
                   help="Ray address ('auto': the running cluster); default: start a local Ray")
    p.add_argument("--collection", default=None, help="override retriever.config.collection")
    p.add_argument("--qdrant-path", default=None, help="override retriever.config.path")
    p.add_argument("--qdrant-url", default=None, help="override retriever.config.url")
    p.add_argument("--batch-size", type=_positive, default=64, help="chunks per embedding call")
    p.add_argument("--concurrency", type=_concurrency, default=(1, 1),
                   help="embedding actors: N, or MIN,MAX (default 1)")
    p.add_argument("--num-gpus", type=float, default=None,
                   help="GPUs per embedding actor (default: 1 if the cluster has GPUs)")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per CPU embedding actor")
    p.add_argument("--write-batch", type=_positive, default=128, help="documents per write")
    p.add_argument("--tenant", default="default", help="tenant the chunks belong to")
    p.add_argument("--root", type=Path, default=None, help="file document ids are relative to it")
    p.add_argument("--no-resume", action="store_true",
                   help="re-embed and rewrite documents already indexed unchanged")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _with_overrides(args: RagAppArgs, ns: argparse.Namespace) -> RagAppArgs:
    update = {k: v for k, v in (("collection", ns.collection), ("path", ns.qdrant_path),
                                ("url", ns.qdrant_url)) if v is not None}
    if not update:
        return args
    data = args.model_dump(mode="python")
    data["retriever"]["config"].update(update)
    return RagAppArgs.model_validate(data)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 all indexed (or unchanged); 1 some documents failed; 2 nothing could be
    indexed, or a bad option or config."""
    ns = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args, env_vars = load_app_args(ns.config, ns.app)
        args = _with_overrides(args, ns)
    except (OSError, ValueError, yaml.YAMLError) as exc:  # ValidationError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    last = [0.0]

    def progress(p: IndexProgress) -> None:
        if ns.quiet or p.seconds - last[0] < 2.0:
            return
        last[0] = p.seconds
        print(f"progress: {p.documents_done}/{p.documents_total} documents, "
              f"{p.chunks_written} chunks written, {p.skipped} skipped, {p.failed} failed, "
              f"{p.chunks_per_s:.1f} chunks/s", file=sys.stderr, flush=True)

    started_ray = _ensure_ray(ns.address, env_vars)
    try:
        summary = index_corpus(ns.sources, args, batch_size=ns.batch_size,
                               concurrency=ns.concurrency, num_gpus=ns.num_gpus,
                               num_cpus=ns.num_cpus, write_batch=ns.write_batch,
                               resume=not ns.no_resume, tenant=ns.tenant, root=ns.root,
                               progress=progress)
    except RagServeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    finally:
        if started_ray:
            ray.shutdown()
    if ns.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.describe())
        for failure in summary.failed:
            print(f"failed: {failure.source}: {failure.reason}")
    if summary.failed:
        return 2 if summary.indexed == 0 and summary.skipped == 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
