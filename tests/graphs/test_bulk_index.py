"""Bulk indexing on Ray Data (``graphs.indexing``) against the online write path.

Real parts throughout: the session's local Ray, Ray Data with an embedding actor, the bundled
MiniLM, Qdrant local mode in a temp folder. The job's points are compared with what
``RAGPipeline.ingest`` (the code behind ``POST /v1/documents``) stores for the same documents.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from graphs.args import RagAppArgs
from graphs.indexing import IndexProgress, index_corpus, read_corpus
from ragserve.config import EmbedderConfig, IngressConfig, RetrieverConfig
from ragserve.embedding import SentenceTransformerEmbedder
from ragserve.embedding.local import LocalEmbedder
from ragserve.ingest.chunking import TokenChunker, chunk_document
from ragserve.pipeline import RAGPipeline, StageSet
from ragserve.reranking.lexical import RetrievalOrderScorer
from ragserve.reranking.local import ScorerReranker
from ragserve.retrieval.qdrant import QdrantRetriever
from ragserve.schemas import IngestRequest, SearchRequest
from tests.corpus import DOCUMENTS, QUESTIONS

pytestmark = pytest.mark.slow

# Ray Data needs pandas and pyarrow (ray[data]); without them the job cannot run at all.
for _module in ("pandas", "pyarrow"):
    pytest.importorskip(_module, reason="Ray Data needs ray[data] (pandas, pyarrow)")

SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact" / "corpus.jsonl"
EMBEDDER = {"torch_threads": 1}


def _args(path: Path, collection: str = "bulk") -> RagAppArgs:
    return RagAppArgs.model_validate({
        "embedder": {"config": EMBEDDER},
        "retriever": {"config": {"path": str(path), "collection": collection}},
    })


def _write_corpus(tmp: Path, scifact_docs: int) -> list[Path]:
    """The test corpus as API-shape JSONL, plus SciFact's first documents as BEIR JSONL."""
    api = tmp / "api.jsonl"
    api.write_text("".join(json.dumps(d) + "\n" for d in DOCUMENTS))
    sources = [api]
    if SCIFACT.exists() and scifact_docs:
        with SCIFACT.open(encoding="utf-8") as f:
            lines = [next(f) for _ in range(scifact_docs)]
        beir = tmp / "scifact.jsonl"
        beir.write_text("".join(lines))
        sources.append(beir)
    return sources


async def _points(path: Path, collection: str) -> dict[str, tuple[dict, list[float], dict]]:
    """point id -> (payload, dense vector, sparse vector) of a collection."""
    r = QdrantRetriever(RetrieverConfig(path=str(path), collection=collection))
    await r.warm_up()
    try:
        out, offset = {}, None
        while True:
            page, offset = await r.client.scroll(collection, limit=256, offset=offset,
                                                 with_payload=True, with_vectors=True)
            for p in page:
                sparse = p.vector.get("lexical")
                out[str(p.id)] = (p.payload, p.vector["dense"],
                                  dict(zip(sparse.indices, sparse.values)) if sparse else {})
            if offset is None:
                return out
    finally:
        await r.aclose()


async def _online_ingest(path: Path, docs) -> None:
    backend = SentenceTransformerEmbedder(EmbedderConfig(**EMBEDDER))
    backend.warm_up()
    retriever = QdrantRetriever(RetrieverConfig(path=str(path), collection="online"))
    await retriever.warm_up()
    pipe = RAGPipeline(StageSet(embedder=LocalEmbedder(backend), retriever=retriever,
                                reranker=ScorerReranker(RetrievalOrderScorer())),
                       config=IngressConfig())
    try:
        await pipe.startup()
        for i in range(0, len(docs), 64):
            await pipe.ingest(IngestRequest(documents=docs[i:i + 64]))
    finally:
        await retriever.aclose()


async def _search(path: Path, query: str) -> list[str]:
    backend = SentenceTransformerEmbedder(EmbedderConfig(**EMBEDDER))
    backend.warm_up()
    retriever = QdrantRetriever(RetrieverConfig(path=str(path), collection="bulk"))
    await retriever.warm_up()
    pipe = RAGPipeline(StageSet(embedder=LocalEmbedder(backend), retriever=retriever,
                                reranker=ScorerReranker(RetrievalOrderScorer())))
    try:
        await pipe.startup()
        answer = await pipe.search(SearchRequest(query=query, top_k=5, rerank_top_n=3))
        return [c.doc_id for c in answer.results]
    finally:
        await retriever.aclose()


def _expected_ids(docs) -> set[str]:
    chunker = TokenChunker(IngressConfig().chunking)
    return {c.chunk_id for d in docs for c in chunk_document(d, chunker)}


def test_bulk_job_stores_what_the_online_indexer_stores(serve_instance, tmp_path):
    sources = _write_corpus(tmp_path, 200)
    docs, failures = read_corpus(sources)
    assert not failures and len(docs) == len(DOCUMENTS) + (200 if SCIFACT.exists() else 0)

    summary = index_corpus(sources, _args(tmp_path / "bulk"), batch_size=32, write_batch=32)

    assert summary.failed == []
    assert (summary.documents, summary.indexed, summary.skipped) == (len(docs), len(docs), 0)
    bulk = asyncio.run(_points(tmp_path / "bulk", "bulk"))
    assert summary.chunks == len(bulk) == len(_expected_ids(docs))
    assert summary.chunks_per_s > 0
    assert summary.embedder == "sentence-transformers/all-MiniLM-L6-v2+mean-windows"  # vectors_id

    asyncio.run(_online_ingest(tmp_path / "online", docs))
    online = asyncio.run(_points(tmp_path / "online", "online"))
    assert set(bulk) == set(online)  # the same point ids
    for point_id, (payload, dense, sparse) in online.items():
        b_payload, b_dense, b_sparse = bulk[point_id]
        assert b_payload == payload
        assert b_sparse == sparse
        # the same model and code; only the batch a text was padded in differs
        np.testing.assert_allclose(b_dense, dense, atol=1e-5)

    for question, doc_id in QUESTIONS:
        assert asyncio.run(_search(tmp_path / "bulk", question))[0] == doc_id


class _Interrupt(Exception):
    pass


def test_an_interrupted_job_resumes_without_duplicates(serve_instance, tmp_path):
    sources = _write_corpus(tmp_path, 120)
    docs, _ = read_corpus(sources)
    expected = _expected_ids(docs)
    args = _args(tmp_path / "q")
    writes: list[int] = []

    def stop_after_two_writes(p: IndexProgress) -> None:
        if not writes or p.chunks_written != writes[-1]:
            writes.append(p.chunks_written)
        if len(writes) >= 3:  # 0, then two writes
            raise _Interrupt

    with pytest.raises(_Interrupt):
        index_corpus(sources, args, batch_size=16, write_batch=8, progress=stop_after_two_writes)
    partial = asyncio.run(_points(tmp_path / "q", "bulk"))
    assert 0 < len(partial) < len(expected) and set(partial) <= expected

    resumed = index_corpus(sources, args, batch_size=16, write_batch=8)
    after = asyncio.run(_points(tmp_path / "q", "bulk"))
    assert set(after) == expected and len(after) == len(expected)
    done_before = len({p[0]["doc_id"] for p in partial.values()})
    assert resumed.skipped == done_before
    assert resumed.indexed == len(docs) - done_before
    assert resumed.chunks == len(expected) - len(partial)

    again = index_corpus(sources, args, batch_size=16, write_batch=8)
    assert (again.indexed, again.skipped, again.chunks) == (0, len(docs), 0)
    assert set(asyncio.run(_points(tmp_path / "q", "bulk"))) == expected


def test_bad_input_is_reported_in_the_summary(serve_instance, tmp_path):
    good = {"_id": "ok-1", "title": "Fine", "text": "A well formed record about descaling."}
    beir = tmp_path / "broken.jsonl"
    beir.write_text(json.dumps(good) + "\n{not json\n" + json.dumps({"_id": "x"}) + "\n")
    api = tmp_path / "api.jsonl"
    api.write_text(json.dumps(DOCUMENTS[0]) + "\n"
                   + json.dumps({**DOCUMENTS[1], "id": "", "metadata": {}}) + "\n")
    missing = tmp_path / "nowhere.md"

    summary = index_corpus([beir, api, missing], _args(tmp_path / "bad"), batch_size=8)

    reasons = {f.source: f.reason for f in summary.failed}
    assert any(s.endswith("broken.jsonl:2") and "invalid JSON" in r for s, r in reasons.items())
    assert any(s.endswith("broken.jsonl:3") and "text" in r for s, r in reasons.items())
    assert any(s.endswith("api.jsonl:2") and "id" in r for s, r in reasons.items())
    assert reasons[str(missing)] == "no such file or folder"
    assert (summary.documents, summary.indexed) == (2, 2)
    stored = asyncio.run(_points(tmp_path / "bad", "bulk"))
    assert {p[0]["doc_id"] for p in stored.values()} == {"ok-1", DOCUMENTS[0]["id"]}
