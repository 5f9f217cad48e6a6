"""Issue 14: API keys and scopes, tenants and document access, per-key limits — through the
real FastAPI app and handle API around in-process stages (no Ray), composed as the ingress
composes them (``SecurityLayer``: the guard check, the access-controlled retriever, metering).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from ragserve.cache import CacheLayer
from ragserve.config import CacheConfig, IngressConfig
from ragserve.edge import Guard, HandleAPI, create_app
from ragserve.errors import ConfigurationError
from ragserve.pipeline import RAGPipeline, StageSet
from ragserve.security.access import Access, PRINCIPAL
from ragserve.security.auth import SecurityLayer, check_exposure
from ragserve.security.config import SecretRef, SecurityConfig, redis_url_with_password
from ragserve.security.keys import hash_key, new_key
from tests.fakes import FakeEmbedder, FakeGenerator, FakeReranker, MemoryRetriever

ALL = ["search", "query", "ingest", "delete", "embeddings", "admin"]
KEYS = {name: new_key() for name in ("acme", "globex", "acme_reader", "acme_finance",
                                      "search_only", "expired")}


def key_spec(name: str, tenant: str, scopes=ALL, **extra) -> dict:
    return {"id": name, "tenant": tenant, "scopes": scopes,
            "key": {"value": KEYS[name]}, **extra}


SECURITY = {
    "keys": [
        key_spec("acme", "acme"),
        key_spec("globex", "globex"),
        key_spec("acme_reader", "acme", ["search", "query"], acl_groups=["sales"]),
        key_spec("acme_finance", "acme", ["search", "query"], acl_groups=["finance"]),
        key_spec("search_only", "acme", ["search"]),
        key_spec("expired", "acme", ALL,
                 expires_at=(datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()),
    ],
    "rate_limits": {"default": {"requests_per_minute": 10_000}},
}


class Service:
    """What ``deployments/ingress.py`` builds, without Ray."""

    def __init__(self, security: dict | None = None, cache: dict | None = None,
                 retriever: MemoryRetriever | None = None) -> None:
        config = IngressConfig.model_validate({"security": security or SECURITY,
                                               "cache": cache or {}})
        self.security = SecurityLayer(config.security, redis_url=redis_url_with_password(
            config.cache.redis_url, config.cache.redis_password))
        self.cache = CacheLayer.from_config(config.cache)
        self.retriever = retriever or MemoryRetriever()
        stages = StageSet(embedder=self.cache.embedder(FakeEmbedder()),
                          retriever=self.security.retriever(self.retriever),
                          reranker=FakeReranker(), generator=FakeGenerator())
        self.pipeline = self.security.service(
            self.cache.pipeline(RAGPipeline(stages, config=config), fingerprint="t"))
        self.guard = Guard([self.security.check])
        self.app = create_app(lambda: self.pipeline, guard=self.guard,
                              keyring=None if self.security.open else self.security.ring)
        self.handles = HandleAPI(lambda: self.pipeline, self.guard)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t")


async def started(**kwargs) -> Service:
    svc = Service(**kwargs)
    await svc.pipeline.startup()
    return svc


def auth(name: str) -> dict:
    return {"Authorization": f"Bearer {KEYS[name]}"}


async def _in_context(coro):
    """Run a handle call in a fresh context, as Serve runs each request."""
    return await asyncio.create_task(coro)


SAME_DOCS = {"documents": [
    {"id": "plan", "text": "The launch plan names the secret codename for the rocket."},
    {"id": "budget", "text": "The budget of the rocket launch is forty million.",
     "acl": ["finance"]},
]}


async def _seed(svc: Service, c: httpx.AsyncClient) -> None:
    for tenant in ("acme", "globex"):
        docs = json.loads(json.dumps(SAME_DOCS).replace("secret codename", f"{tenant}-codename"))
        r = await c.post("/v1/documents", json=docs, headers=auth(tenant))
        assert r.status_code == 200, r.text
        assert [d["status"] for d in r.json()["documents"]] == ["created", "created"]


# ---------------------------------------------------------------- keys and scopes

async def test_missing_malformed_unknown_expired_and_revoked_keys_are_one_401():
    svc = await started()
    async with svc.client() as c:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).status_code in (200, 503)
        created = await c.post("/v1/admin/keys", json={"scopes": ["search"]}, headers=auth("acme"))
        revoked = created.json()["key"]
        assert (await c.delete(f"/v1/admin/keys/{created.json()['info']['id']}",
                               headers=auth("acme"))).status_code == 200
        bodies = []
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"},
                        {"Authorization": "Bearer short"}, {"Authorization": f"Bearer {new_key()}"},
                        {"Authorization": f"Bearer {KEYS['acme']}x"}, auth("expired"),
                        {"Authorization": f"Bearer {revoked}"}):
            r = await c.post("/v1/search", json={"query": "rocket"}, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            error = r.json()["error"]
            bodies.append((error["code"], error["message"]))
            assert KEYS["acme"] not in r.text
        assert len(set(bodies)) == 1  # nothing tells the cases apart


async def test_a_key_without_the_scope_is_403_and_operations_map_to_scopes():
    svc = await started()
    async with svc.client() as c:
        await _seed(svc, c)
        ok = await c.post("/v1/search", json={"query": "rocket"}, headers=auth("search_only"))
        assert ok.status_code == 200
        assert (await c.get("/v1/documents/plan", headers=auth("search_only"))).status_code == 200
        for method, path, body in (("post", "/v1/query", {"query": "rocket"}),
                                   ("post", "/v1/embeddings", {"input": ["x"]}),
                                   ("post", "/v1/documents", SAME_DOCS),
                                   ("delete", "/v1/documents/plan", None),
                                   ("get", "/v1/admin/keys", None)):
            kwargs = {"json": body} if body is not None else {}
            r = await c.request(method, path, headers=auth("search_only"), **kwargs)
            assert r.status_code == 403, (path, r.text)
            assert r.json()["error"]["code"] == "forbidden"


async def test_keys_are_stored_as_hashes_and_shown_once():
    svc = await started()
    async with svc.client() as c:
        created = (await c.post("/v1/admin/keys", json={"scopes": ["search"], "name": "ci"},
                                headers=auth("acme"))).json()
        key = created["key"]
        assert key.startswith("rsk_") and len(key) >= 40
        listing = (await c.get("/v1/admin/keys", headers=auth("acme"))).text
        assert key not in listing and hash_key(key) not in listing
        assert created["info"]["id"] in listing and created["info"]["tenant"] == "acme"
        stored = await svc.security.ring.store.by_id(created["info"]["id"])
        assert stored.key_sha256 == hash_key(key)
        assert key not in stored.model_dump_json()
        # a tenant's admin sees and manages only its tenant's keys
        assert created["info"]["id"] not in (await c.get("/v1/admin/keys",
                                                         headers=auth("globex"))).text
        assert (await c.delete(f"/v1/admin/keys/{created['info']['id']}",
                               headers=auth("globex"))).status_code == 404
        assert (await c.post("/v1/search", json={"query": "x"},
                             headers={"Authorization": f"Bearer {key}"})).status_code == 200


async def test_rotate_gives_a_new_secret_and_the_old_one_stops():
    svc = await started()
    async with svc.client() as c:
        created = (await c.post("/v1/admin/keys", json={"scopes": ["search"]},
                                headers=auth("acme"))).json()
        rotated = await c.post(f"/v1/admin/keys/{created['info']['id']}/rotate", headers=auth("acme"))
        assert rotated.status_code == 200 and rotated.json()["info"]["id"] == created["info"]["id"]
        old = {"Authorization": f"Bearer {created['key']}"}
        new = {"Authorization": f"Bearer {rotated.json()['key']}"}
        assert (await c.post("/v1/search", json={"query": "x"}, headers=old)).status_code == 401
        assert (await c.post("/v1/search", json={"query": "x"}, headers=new)).status_code == 200


async def test_a_reader_key_with_acl_groups_cannot_be_a_writer():
    with pytest.raises(ValueError, match="cannot have the ingest"):
        SecurityConfig.model_validate({"keys": [{"id": "k", "scopes": ["ingest"], "acl_groups": ["g"],
                                                 "key": {"value": new_key()}}]})
    svc = await started()
    async with svc.client() as c:
        r = await c.post("/v1/admin/keys", json={"scopes": ["delete"], "acl_groups": ["g"]},
                         headers=auth("acme"))
        assert r.status_code == 422


async def test_handles_pass_the_same_guard_and_a_configured_principal_serves_trusted_callers():
    svc = await started()
    async with svc.client() as c:
        await _seed(svc, c)
    from ragserve.security.errors import AuthenticationError, PermissionDeniedError
    with pytest.raises(AuthenticationError):
        await _in_context(svc.handles.search({"query": "rocket"}))
    with pytest.raises(PermissionDeniedError):
        await _in_context(svc.handles.query({"query": "rocket"},
                                            credentials=KEYS["search_only"]))
    res = await _in_context(svc.handles.search({"query": "codename"}, credentials=KEYS["globex"]))
    assert res.results and {r.doc_id for r in res.results} <= {"plan", "budget"}
    assert all("globex" in r.text or "budget" in r.text for r in res.results)
    trusted = await started(security={**SECURITY, "handle_principal": "globex"})
    await _in_context(trusted.handles.ingest(SAME_DOCS))  # as globex, no credentials
    assert (await _in_context(trusted.handles.get_document("plan"))).chunks[0].tenant == "globex"
    async with trusted.client() as c:  # HTTP never uses the handle principal
        assert (await c.get("/v1/documents/plan")).status_code == 401


# ---------------------------------------------------------------- tenants and ACLs

async def test_two_tenants_with_the_same_ids_and_texts_never_see_each_other():
    svc = await started()
    async with svc.client() as c:
        await _seed(svc, c)
        own = {}
        for me in ("acme", "globex"):
            own[me] = {ch["chunk_id"] for d in ("plan", "budget") for ch in (await c.get(
                f"/v1/documents/{d}", headers=auth(me))).json()["chunks"]}
        for me, other in (("acme", "globex"), ("globex", "acme")):
            h = auth(me)
            # search, with filters that try to reach the other tenant
            for body in ({"query": "rocket launch codename"},
                         {"query": "rocket", "filters": {"tenant": other}},
                         {"query": "rocket", "filters": {"doc_id": ["plan", "budget"]}},
                         {"query": "rocket", "mode": "sparse"}, {"query": "rocket", "mode": "dense"}):
                r = await c.post("/v1/search", json=body, headers=h)
                assert r.status_code == 200
                assert f"{other}-codename" not in r.text
                assert {x["chunk_id"] for x in r.json()["results"]} <= own[me]
            # whole and streamed answers
            q = await c.post("/v1/query", json={"query": "what is the codename?"}, headers=h)
            assert q.status_code == 200 and f"{other}-codename" not in q.text
            assert f"{me}-codename" in q.text
            s = await c.post("/v1/query", json={"query": "what is the codename?", "stream": True},
                             headers=h)
            assert s.status_code == 200 and f"{other}-codename" not in s.text
            # documents: same ids, own copy only
            d = await c.get("/v1/documents/plan", headers=h)
            assert d.status_code == 200 and f"{me}-codename" in d.text
            assert {ch["tenant"] for ch in d.json()["chunks"]} == {me}
        acme_ids = {ch["chunk_id"] for ch in (await c.get("/v1/documents/plan",
                                                          headers=auth("acme"))).json()["chunks"]}
        globex_ids = {ch["chunk_id"] for ch in (await c.get("/v1/documents/plan",
                                                            headers=auth("globex"))).json()["chunks"]}
        assert acme_ids and globex_ids and not acme_ids & globex_ids
        # a delete by one tenant is a 404 for the other's id space and leaves the other's copy
        assert (await c.delete("/v1/documents/plan", headers=auth("acme"))).status_code == 200
        assert (await c.get("/v1/documents/plan", headers=auth("acme"))).status_code == 404
        assert (await c.delete("/v1/documents/plan", headers=auth("acme"))).status_code == 404
        assert (await c.get("/v1/documents/plan", headers=auth("globex"))).status_code == 200
        # a document only one tenant has is a 404 (not a 403) for the other
        await c.post("/v1/documents", json={"documents": [{"id": "only-acme", "text": "x y"}]},
                     headers=auth("acme"))
        for method in ("get", "delete"):
            r = await c.request(method, "/v1/documents/only-acme", headers=auth("globex"))
            assert r.status_code == 404
        # embeddings carry no documents: both tenants get the same vectors
        e1 = await c.post("/v1/embeddings", json={"input": ["x"]}, headers=auth("acme"))
        e2 = await c.post("/v1/embeddings", json={"input": ["x"]}, headers=auth("globex"))
        assert e1.json()["data"] == e2.json()["data"]


async def test_acl_groups_decide_which_documents_a_key_reads():
    svc = await started()
    async with svc.client() as c:
        await _seed(svc, c)
        body = {"query": "budget forty million", "top_k": 10}
        sales = await c.post("/v1/search", json=body, headers=auth("acme_reader"))
        finance = await c.post("/v1/search", json=body, headers=auth("acme_finance"))
        assert "budget" not in {r["doc_id"] for r in sales.json()["results"]}
        assert "budget" in {r["doc_id"] for r in finance.json()["results"]}
        assert (await c.get("/v1/documents/budget", headers=auth("acme_reader"))).status_code == 404
        assert (await c.get("/v1/documents/budget", headers=auth("acme_finance"))).status_code == 200
        # the same query by the two keys: two cache entries, no cross-over
        again = await c.post("/v1/search", json=body, headers=auth("acme_reader"))
        assert again.json()["cache"]["query"] == "hit"
        assert "budget" not in {r["doc_id"] for r in again.json()["results"]}
        q = await c.post("/v1/query", json={"query": "budget forty million"},
                         headers=auth("acme_reader"))
        assert "forty million" not in q.json()["answer"]


async def test_cached_answers_and_sessions_are_keyed_by_tenant():
    svc = await started()
    async with svc.client() as c:
        await _seed(svc, c)
        body = {"query": "what is the codename?", "session_id": "shared-session"}
        first = await c.post("/v1/query", json=body, headers=auth("acme"))
        assert first.json()["cache"]["query"] == "miss"
        other = await c.post("/v1/query", json=body, headers=auth("globex"))
        assert other.json()["cache"]["query"] == "miss"  # not acme's cached answer
        assert "acme-codename" not in other.text
        # the same session id in another tenant starts empty
        follow = await c.post("/v1/query", json={**body, "query": "and the budget?"},
                              headers=auth("globex"))
        assert follow.json()["cache"]["session_turns"] == 1  # its own first turn only
        assert "acme" not in follow.text
        # Without a session the same question is the same key: a hit for acme, never for globex.
        plain = {"query": "which codename does the rocket have?"}
        await c.post("/v1/query", json=plain, headers=auth("acme"))
        again = await c.post("/v1/query", json=plain, headers=auth("acme"))
        assert again.json()["cache"]["query"] == "hit"
        cross_query = await c.post("/v1/query", json=plain, headers=auth("globex"))
        assert cross_query.json()["cache"]["query"] == "miss"
        assert "acme-codename" not in cross_query.text
        search = {"query": "rocket codename"}
        await c.post("/v1/search", json=search, headers=auth("acme"))
        hit = await c.post("/v1/search", json=search, headers=auth("acme"))
        assert hit.json()["cache"]["query"] == "hit"
        cross = await c.post("/v1/search", json=search, headers=auth("globex"))
        assert cross.json()["cache"]["query"] == "miss" and "acme-codename" not in cross.text


async def test_the_retriever_layer_fails_closed_without_a_principal():
    svc = await started()
    layered = svc.pipeline  # called without the guard: no principal bound
    from ragserve.schemas import SearchRequest
    from ragserve.errors import StageUnavailableError
    token = PRINCIPAL.set(None)
    try:  # the stage caller reports it as the retriever refusing: a 503, never a result
        with pytest.raises((PermissionError, StageUnavailableError), match="principal"):
            await layered.search(SearchRequest(query="rocket"))
    finally:
        PRINCIPAL.reset(token)


async def test_audit_log_records_who_retrieved_which_chunks(tmp_path):
    path = tmp_path / "audit.jsonl"
    svc = await started(security={**SECURITY, "audit": {"path": str(path)}})
    async with svc.client() as c:
        await _seed(svc, c)
        r = await c.post("/v1/search", json={"query": "rocket secret"}, headers=auth("globex"))
        ids = [x["chunk_id"] for x in r.json()["results"]]
    for h in svc.security.audit.log.handlers:
        h.flush()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    mine = [x for x in records if x["operation"] == "search" and x["key_id"] == "globex"]
    assert mine and mine[-1]["tenant"] == "globex" and mine[-1]["chunk_ids"] == ids
    assert "rocket" not in path.read_text()
    for h in list(svc.security.audit.log.handlers):
        svc.security.audit.log.removeHandler(h)
        h.close()


# ---------------------------------------------------------------- limits

async def test_request_limit_is_429_with_retry_after_and_ratelimit_headers():
    limited = {**SECURITY, "keys": [key_spec("acme", "acme", limits={"requests_per_minute": 3})]}
    svc = await started(security=limited)
    async with svc.client() as c:
        codes = []
        for _ in range(5):
            r = await c.post("/v1/search", json={"query": "x"}, headers=auth("acme"))
            codes.append(r.status_code)
        assert codes == [200, 200, 200, 429, 429]
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["ratelimit-limit"] == "3" and r.headers["ratelimit-remaining"] == "0"
        assert r.json()["error"]["code"] == "rate_limited"
        fresh = await started(security=limited)
        ok = await fresh.client().post("/v1/search", json={"query": "x"}, headers=auth("acme"))
        assert ok.headers["ratelimit-limit"] == "3" and ok.headers["ratelimit-remaining"] == "2"


async def test_tokens_are_charged_by_actual_usage():
    limited = {**SECURITY, "keys": [key_spec("acme", "acme", limits={"tokens_per_minute": 20})]}
    svc = await started(security=limited)
    async with svc.client() as c:
        await c.post("/v1/documents", json=SAME_DOCS, headers=auth("acme"))
        statuses = []
        for i in range(6):
            r = await c.post("/v1/query", json={"query": f"rocket question {i}"},
                             headers=auth("acme"))
            statuses.append(r.status_code)
        assert 200 in statuses and statuses[-1] == 429
        assert r.json()["error"]["details"]["limit"] == "token"


# ---------------------------------------------------------------- secure by default

def test_open_mode_only_on_loopback_and_require_keys():
    assert "OPEN" in check_exposure(SecurityConfig(), "127.0.0.1")
    assert "OPEN" in check_exposure(SecurityConfig(), "::1")
    for host in ("0.0.0.0", "10.1.2.3", "::"):
        with pytest.raises(ConfigurationError, match="security.keys"):
            check_exposure(SecurityConfig(), host)
    assert "required" in check_exposure(SecurityConfig.model_validate(SECURITY), "0.0.0.0")
    with pytest.raises(ValueError, match="require_keys"):
        SecurityConfig(require_keys=True)


def test_cluster_config_requires_keys_from_the_environment(monkeypatch):
    import yaml

    from graphs.args import RagAppArgs
    doc = yaml.safe_load(open("configs/cluster.yaml"))
    args = RagAppArgs.model_validate(doc["applications"][0]["args"])
    sec = args.ingress.config.security
    assert sec.require_keys and sec.keys and all(k.key.env or k.key.file for k in sec.keys)
    bare = json.loads(json.dumps(doc["applications"][0]["args"]))
    bare["ingress"]["config"]["security"]["keys"] = []
    with pytest.raises(ValueError, match="require_keys"):
        RagAppArgs.model_validate(bare)


def test_secret_refs_read_env_and_files_at_run_time(tmp_path, monkeypatch):
    ref = SecretRef(env="RAGSERVE_TEST_KEY")
    monkeypatch.delenv("RAGSERVE_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="env RAGSERVE_TEST_KEY"):
        ref.resolve()
    monkeypatch.setenv("RAGSERVE_TEST_KEY", "  from-env  ")
    assert ref.resolve() == "from-env"
    f = tmp_path / "key"
    f.write_text("from-file\n")
    assert SecretRef(file=str(f)).resolve() == "from-file"
    with pytest.raises(ValueError):
        SecretRef(env="A", file="b")
    spec = {"id": "k", "scopes": ["search"], "key_sha256": hash_key("x" * 40)}
    layer = SecurityLayer(SecurityConfig.model_validate({"keys": [spec]}))
    assert asyncio.run(layer.ring.authenticate("x" * 40)).key_id == "k"


# ---------------------------------------------------------------- Redis: shared keys and limits

async def test_revocation_reaches_every_replica_within_seconds(redis_server):
    cfg = {**SECURITY, "key_store": {"cache_ttl_s": 0.5}}
    cache = {"redis_url": redis_server.url}
    a, b = await started(security=cfg, cache=cache), await started(security=cfg, cache=cache)
    async with a.client() as ca, b.client() as cb:
        made = (await ca.post("/v1/admin/keys", json={"scopes": ["search"]},
                              headers=auth("acme"))).json()
        h = {"Authorization": f"Bearer {made['key']}"}
        assert (await cb.post("/v1/search", json={"query": "x"}, headers=h)).status_code == 200
        assert (await ca.delete(f"/v1/admin/keys/{made['info']['id']}",
                                headers=auth("acme"))).status_code == 200
        await asyncio.sleep(0.6)
        assert (await cb.post("/v1/search", json={"query": "x"}, headers=h)).status_code == 401
        listed = (await cb.get("/v1/admin/keys", headers=auth("acme"))).json()["keys"]
        assert any(k["id"] == made["info"]["id"] and k["revoked"] for k in listed)


async def test_limits_are_shared_through_redis_and_fall_back_locally(redis_server):
    limited = {**SECURITY, "keys": [key_spec("acme", "acme", limits={"requests_per_minute": 4})]}
    cache = {"redis_url": redis_server.url}
    a, b = await started(security=limited, cache=cache), await started(security=limited, cache=cache)
    async with a.client() as ca, b.client() as cb:
        codes = [(await (ca if i % 2 else cb).post("/v1/search", json={"query": "x"},
                                                   headers=auth("acme"))).status_code
                 for i in range(6)]
        assert codes == [200, 200, 200, 200, 429, 429]  # one budget across both replicas
        redis_server.stop()
        r = await ca.post("/v1/search", json={"query": "x"}, headers=auth("acme"))
        assert r.status_code == 200  # Redis down: this replica counts alone, never a 500
        assert a.security.limiter.fallbacks >= 1
        assert a.security.limiter.backend == "memory (redis down)"
