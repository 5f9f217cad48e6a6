"""The real graph under ``serve.run``: bundled models, Qdrant local mode in a temp folder."""

from __future__ import annotations

import httpx
import pytest
from ray import serve

from graphs.rag import build_app
from tests.conftest import small_app_args, wait_until_routed
from tests.graphs.answer_checks import assert_local_model_answered_or_was_replaced
from tests.corpus import DOCUMENTS, QUESTIONS

pytestmark = pytest.mark.slow
APP = "rag-graph-test"
PREFIX = "/graphtest"


@pytest.fixture(scope="module")
def rag(serve_instance, tmp_path_factory, model_cache):
    args = small_app_args(tmp_path_factory.mktemp("graph"), model_cache)
    handle = serve.run(build_app(args), name=APP, route_prefix=PREFIX)
    wait_until_routed(serve_instance + PREFIX)
    client = httpx.Client(base_url=serve_instance + PREFIX, timeout=120)
    ingest = client.post("/v1/documents", json={"documents": DOCUMENTS})
    assert ingest.status_code == 200, ingest.text
    yield handle, client, ingest.json()
    client.close()
    serve.delete(APP)


def test_ingest_reports_every_document_created(rag):
    _, _, body = rag
    assert sorted(d["id"] for d in body["documents"]) == sorted(d["id"] for d in DOCUMENTS)
    assert {d["status"] for d in body["documents"]} == {"created"}
    assert body["chunks_embedded"] == sum(d["chunks"] for d in body["documents"]) >= 3


@pytest.mark.parametrize("question,doc_id", QUESTIONS)
def test_search_ranks_the_right_document_first(rag, question, doc_id):
    _, client, _ = rag
    r = client.post("/v1/search", json={"query": question, "top_k": 10, "rerank_top_n": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"][0]["doc_id"] == doc_id
    assert body["backends"]["reranker"] == "retrieval"  # no cross-encoder offline
    assert body["backends"]["retriever"] == "qdrant-local"
    assert body["timings"]["embed_ms"] > 0 and body["timings"]["retrieve_ms"] > 0


def test_query_answers_and_cites_the_right_chunk(rag):
    _, client, _ = rag
    question, doc_id = QUESTIONS[0]
    r = client.post("/v1/query", json={"query": question, "rerank_top_n": 2, "max_tokens": 24})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"].strip()
    assert body["citations"][0]["doc_id"] == doc_id and body["citations"][0]["number"] == 1
    assert body["usage"]["completion_tokens"] > 0
    assert body["usage"]["completion_tokens"] <= 24
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert_local_model_answered_or_was_replaced(body)


def test_query_streams_server_sent_events(rag):
    _, client, _ = rag
    question, doc_id = QUESTIONS[1]
    events: list[tuple[str, str]] = []
    with client.stream("POST", "/v1/query", json={"query": question, "stream": True, "max_tokens": 16}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, line[6:]))
    names = [e for e, _ in events]
    assert names[0] == "meta" and names[-1] == "done" and "token" in names
    import json

    meta = json.loads(events[0][1])
    done = json.loads(events[-1][1])
    assert meta["citations"][0]["doc_id"] == doc_id
    streamed = "".join(json.loads(d)["delta"] for e, d in events if e == "token")
    assert streamed == done["answer"] and done["usage"]["completion_tokens"] > 0


def test_reingest_is_a_noop_and_changed_document_replaces_chunks(rag):
    _, client, _ = rag
    again = client.post("/v1/documents", json={"documents": DOCUMENTS}).json()
    assert {d["status"] for d in again["documents"]} == {"unchanged"}
    assert again["chunks_embedded"] == 0

    before = client.get(f"/v1/documents/{DOCUMENTS[2]['id']}").json()
    changed = dict(DOCUMENTS[2], text=DOCUMENTS[2]["text"] + " Descaling takes ten minutes.")
    r = client.post("/v1/documents", json={"documents": [changed]}).json()
    assert r["documents"][0]["status"] == "updated"
    after = client.get(f"/v1/documents/{DOCUMENTS[2]['id']}").json()
    assert {c["chunk_id"] for c in after["chunks"]}.isdisjoint({c["chunk_id"] for c in before["chunks"]})
    assert "ten minutes" in after["chunks"][0]["text"]
    # Restore, so other tests see the original corpus.
    assert client.post("/v1/documents", json={"documents": [DOCUMENTS[2]]}).json()["documents"][0]["status"] == "updated"


def test_delete_removes_chunks_and_search_no_longer_finds_them(rag):
    _, client, _ = rag
    doc = {"id": "tmp/volcano.txt", "text": "Mount Etna is an active stratovolcano on Sicily.",
           "content_type": "general", "metadata": {"source": "tmp"}}
    assert client.post("/v1/documents", json={"documents": [doc]}).status_code == 200
    hits = client.post("/v1/search", json={"query": "active volcano on Sicily"}).json()["results"]
    assert hits[0]["doc_id"] == doc["id"]
    d = client.delete(f"/v1/documents/{doc['id']}")
    assert d.status_code == 200 and d.json()["deleted_chunks"] >= 1
    assert client.get(f"/v1/documents/{doc['id']}").status_code == 404
    hits = client.post("/v1/search", json={"query": "active volcano on Sicily"}).json()["results"]
    assert all(h["doc_id"] != doc["id"] for h in hits)
    assert client.delete(f"/v1/documents/{doc['id']}").status_code == 404


def test_filters_restrict_results(rag):
    _, client, _ = rag
    r = client.post("/v1/search", json={"query": "descaling tablets", "filters": {"source": "guide"}})
    assert r.status_code == 200
    assert r.json()["results"] and all(h["metadata"]["source"] == "guide" for h in r.json()["results"])
    r = client.post("/v1/search", json={"query": "descaling", "filters": {"tags": ["kitchen", "storage"]}})
    assert {h["doc_id"] for h in r.json()["results"]} <= {"notes/coffee.txt", "guide/qdrant-local.md"}


@pytest.mark.parametrize(
    "path,payload",
    [
        ("/v1/query", {"query": ""}),
        ("/v1/query", {"query": "   "}),
        ("/v1/query", {"query": "x" * 5000}),
        ("/v1/search", {"query": "ok", "top_k": 0}),
        ("/v1/search", {"query": "ok", "top_k": 10_000}),
        ("/v1/search", {"query": "ok", "filters": {"bad key!": 1}}),
        ("/v1/search", {"query": "ok", "filters": {"source": {"$gt": 1}}}),
        ("/v1/search", {"query": "ok", "unknown": 1}),
        ("/v1/documents", {"documents": []}),
        ("/v1/documents", {"documents": [{"id": "a", "text": ""}]}),
        ("/v1/documents", {"documents": [{"id": "../../etc", "text": "x"}]}),
        ("/v1/documents", {"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}),
        ("/v1/documents", {"documents": [{"id": "a", "text": "x", "content_type": "poetry"}]}),
    ],
)
def test_bad_requests_get_4xx_with_a_message_and_lose_nothing(rag, path, payload):
    _, client, _ = rag
    before = client.get(f"/v1/documents/{DOCUMENTS[0]['id']}").json()
    r = client.post(path, json=payload)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.json()["error"]["message"]
    assert client.get(f"/v1/documents/{DOCUMENTS[0]['id']}").json() == before


def test_malformed_json_is_a_4xx(rag):
    _, client, _ = rag
    r = client.post("/v1/query", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_health_readiness_and_openapi(rag):
    _, client, _ = rag
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    stages = ready.json()["stages"]
    assert set(stages) == {"embedder", "retriever", "reranker", "generator", "cache"}
    assert stages["cache"]["backend"] == "memory" and stages["cache"]["available"] is True
    assert stages["reranker"]["backend"] == "retrieval" and stages["reranker"]["fallback_reason"]
    assert stages["embedder"]["dimension"] == 384
    spec = client.get("/openapi.json").json()
    assert {"/v1/query", "/v1/search", "/v1/documents"} <= set(spec["paths"])


def test_repeated_query_is_served_from_the_cache(rag):
    # Only complete answers are cached: a model answer the grounding check replaced with the
    # passages' own sentences is degraded and computed again. Which of the questions the small
    # local model grounds depends on its output, so each kind is checked where it occurs, and at
    # least one answer must be a complete, cached one.
    handle, client, _ = rag
    cached = 0
    for question, _ in QUESTIONS:
        body = {"query": question, "rerank_top_n": 2, "max_tokens": 16}
        first = client.post("/v1/query", json=body).json()
        second = client.post("/v1/query", json=body).json()
        assert first["cache"]["query"] in ("miss", "hit"), first["cache"]
        assert second["answer"] == first["answer"]
        if first["degraded"]:
            assert second["cache"]["query"] == "miss", second["cache"]
            continue
        assert second["cache"]["query"] == "hit", second["cache"]
        cached += 1
    assert cached >= 1, "no question got a complete (grounded) answer to cache"
    stats = handle.readiness.remote().result(timeout_s=30)["stages"]["cache"]
    assert stats["tiers"]["queries"]["hits"] >= 1 and stats["tiers"]["embeddings"]["misses"] >= 1


def test_embeddings_endpoint_serves_the_embedder(rag):
    _, client, _ = rag
    r = client.post("/v1/embeddings", json={"input": ["first text", "second text"],
                                            "input_type": "passage"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["data"]) == 2 and len(body["data"][1]["embedding"]) == 384
    assert body["model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_a_large_call_crosses_the_stage_hops(rag):
    # 2,048 vectors come back from the embedder replica as one ~7 MB message: more than gRPC's
    # default 4 MB limit between stages (graphs/serve_env.py raises it).
    _, client, _ = rag
    texts = [f"text number {i}" for i in range(2048)]
    r = client.post("/v1/embeddings", json={"input": texts, "input_type": "query"})
    assert r.status_code == 200, r.text[:300]
    data = r.json()["data"]
    assert len(data) == 2048 and all(len(d["embedding"]) == 384 for d in data)


def test_python_handle_api(rag):
    handle, _, _ = rag
    res = handle.search.remote({"query": QUESTIONS[2][0], "rerank_top_n": 2}).result(timeout_s=60)
    assert res.results[0].doc_id == QUESTIONS[2][1]
    ready = handle.readiness.remote().result(timeout_s=30)
    assert ready["ready"] is True
