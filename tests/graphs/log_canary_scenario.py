"""The log canary: a real graph under ``serve.run`` with keys on and DEBUG logging, sent unique
canaries through every route — successes, refusals (401, 403, 404, 413, 422), a degraded path
(the reranker's budget is 1 ms: every query times it out and is served in retrieval order) and
a stage failure (``/v1/rerank`` past that budget: 503) — then every file under Ray's session
log folder and every file the service writes (JSON request logs, the audit log) is read.

Run by ``tests/graphs/test_log_canary.py`` in a process of its own (its own Ray, DEBUG logging);
prints one JSON report on its last line:

    .venv/bin/python -m tests.graphs.log_canary_scenario /tmp/workdir
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path

import httpx

from scripts.local_ray import _STATE_BASE, export_for_ray, free_port
from tests.conftest import isolated_serve_env, small_app_args, wait_until_routed

TAG = secrets.token_hex(4)
CANARIES = {  # one per kind of user content, so a leak says what leaked
    "query": f"qcanary{TAG}",
    "document": f"dcanary{TAG}",
    "doc_id": f"icanary{TAG}",
    "metadata": f"mcanary{TAG}",
    "embed_input": f"ecanary{TAG}",
    "rerank": f"rcanary{TAG}",
    "chat": f"ccanary{TAG}",
    "bad_request": f"bcanary{TAG}",
    "admin_key": "rsk_" + secrets.token_hex(32),
    "reader_key": "rsk_" + secrets.token_hex(32),
    "wrong_key": "rsk_" + secrets.token_hex(32),
}


def traffic(c: httpx.Client, k: dict) -> dict[str, int]:
    """Every route with canaries; returns request id -> status."""
    admin = {"authorization": f"Bearer {CANARIES['admin_key']}"}
    reader = {"authorization": f"Bearer {CANARIES['reader_key']}"}
    seen: dict[str, int] = {}
    n = 0

    def call(method: str, path: str, headers: dict | None = None, **kw) -> httpx.Response:
        nonlocal n
        n += 1
        rid = f"canary-rid-{n:02d}"
        r = c.request(method, path, headers={**(headers or {}), "x-request-id": rid}, **kw)
        seen[rid] = r.status_code
        return r

    q, d = CANARIES["query"], CANARIES["document"]
    docs = [{"id": CANARIES["doc_id"],
             "text": f"The embedder batches requests. {d} is the secret word of this passage. "
                     f"Batching {q} shares one model call among concurrent queries.",
             "metadata": {"source": CANARIES["metadata"]}},
            *k["documents"]]
    call("POST", "/v1/documents", admin, json={"documents": docs})
    call("POST", "/v1/search", reader, json={"query": f"{q} batching {d}"})
    call("POST", "/v1/search", reader, json={"query": f"{q} batching",
                                             "filters": {"source": CANARIES["metadata"]}})
    call("POST", "/v1/query", reader, json={"query": f"what is {q} batching {d}",
                                            "max_tokens": 16})
    call("POST", "/v1/query", reader, json={"query": f"{q} stream batching", "stream": True,
                                            "max_tokens": 16})
    call("POST", "/v1/query", reader, json={"query": f"{q} session", "session_id": f"s{TAG}"})
    call("POST", "/v1/query", reader, json={"query": f"{q} session again",
                                            "session_id": f"s{TAG}"})
    call("POST", "/v1/chat/completions", reader, json={
        "model": "ragserve", "messages": [{"role": "user", "content": CANARIES["chat"]}]})
    call("POST", "/v1/chat/completions", reader, json={
        "model": "ragserve", "stream": True,
        "messages": [{"role": "user", "content": f"{CANARIES['chat']} streamed"}]})
    call("POST", "/v1/embeddings", admin, json={"input": [CANARIES["embed_input"]]})
    call("POST", "/v1/rerank", reader, json={"query": CANARIES["rerank"],
                                             "documents": [f"{CANARIES['rerank']} one", "two"]})
    call("GET", f"/v1/documents/{CANARIES['doc_id']}", reader)
    call("GET", f"/v1/documents/{CANARIES['doc_id']}x", reader)  # 404
    call("GET", "/v1/models", reader)
    # refusals
    call("POST", "/v1/search", {"authorization": f"Bearer {CANARIES['wrong_key']}"},
         json={"query": q})  # 401
    call("POST", "/v1/search", {"authorization": f"Bearer {CANARIES['wrong_key'][:20]}"},
         json={"query": q})  # 401, malformed
    call("POST", "/v1/documents", reader, json={"documents": docs[:1]})  # 403
    call("POST", "/v1/search", reader, json={"query": CANARIES["bad_request"], "top_k": -3})  # 422
    call("POST", "/v1/search", reader, content=f'{{"query": "{CANARIES["bad_request"]}",',
         )  # malformed JSON: 422
    call("POST", "/v1/search", reader, json={"query": CANARIES["bad_request"] * 2000})  # 413/422
    r = call("POST", "/v1/admin/keys", admin, json={"scopes": ["search"], "name": f"n{TAG}"})
    if r.status_code == 201:  # the new key, shown once: in no log either
        CANARIES["created_key"] = r.json()["key"]
    call("DELETE", f"/v1/documents/{CANARIES['doc_id']}", admin)
    call("DELETE", f"/v1/documents/{CANARIES['doc_id']}", admin)  # 404 now
    return seen


def main(workdir: Path) -> dict:
    import ray
    from ray import serve

    from graphs.rag import build_app
    from tests.corpus import DOCUMENTS

    env = isolated_serve_env()
    export_for_ray(env)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="DEBUG",
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    http_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": http_port},
                logging_config={"log_level": "DEBUG"})
    audit = workdir / "audit.jsonl"
    report: dict = {}
    try:
        args = small_app_args(workdir, workdir / "models")
        args["generator"]["config"] = {"backend": {"backend": "extractive"}}
        args["ingress"]["config"] = {
            "stage_timeouts_s": {"reranker": 0.001},  # the degraded path, on every query
            "security": {
                "keys": [{"id": "canary-admin", "tenant": "default",
                          "scopes": ["admin", "search", "query", "ingest", "delete",
                                     "embeddings"],
                          "key": {"value": CANARIES["admin_key"]}},
                         {"id": "canary-reader", "tenant": "default",
                          "scopes": ["search", "query"],
                          "key": {"value": CANARIES["reader_key"]}}],
                "audit": {"path": str(audit)}},
        }
        args["observability"] = {"logging": {"level": "DEBUG", "json_format": True,
                                             "request_log": True}}
        serve.run(build_app(args), name="ragserve", route_prefix="/",
                  logging_config={"log_level": "DEBUG"})
        wait_until_routed(f"http://127.0.0.1:{http_port}")
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=120) as c:
            report["statuses"] = traffic(c, {"documents": DOCUMENTS})
        time.sleep(3)  # replica logs are flushed every 0.5 s
        session = Path(ray._private.worker._global_node.get_session_dir_path())
        files = [p for p in session.rglob("*") if p.is_file()] + [
            p for p in workdir.rglob("*") if p.is_file() and "qdrant" not in p.parts
            and "models" not in p.parts]
        haproxy = Path(env.get(_STATE_BASE) or "/nonexistent")  # HAProxy's folder
        files += [p for p in haproxy.rglob("*") if p.is_file()] if haproxy.exists() else []
        report["canaries"] = list(CANARIES)
        texts = {str(p): p.read_bytes().decode("utf-8", "replace") for p in files
                 if p.stat().st_size < 200_000_000}
        report["files_read"] = len(texts)
        report["bytes_read"] = sum(len(t) for t in texts.values())
        report["leaks"] = {k: sorted(p for p, t in texts.items() if v in t)
                           for k, v in CANARIES.items()}
        rids = list(report["statuses"])
        serve_logs = {p: t for p, t in texts.items() if "/logs/serve/" in p}
        report["rids_in_json_logs"] = sorted(
            r for r in rids if any(r in t for p, t in serve_logs.items() if p.endswith(".jsonl")))
        report["rids_in_replica_logs"] = sorted(
            r for r in rids if any(r in t for p, t in serve_logs.items()
                                   if "replica_ragserve_Ingress" in p and p.endswith(".log")))
        report["rids_in_proxy_logs"] = sorted(
            r for r in rids if any(r in t for p, t in serve_logs.items() if "proxy_" in p))
        report["haproxy_files"] = sorted(str(p) for p in files if str(p).startswith(str(haproxy)))
        report["debug_records"] = sum(t.count("DEBUG") for t in serve_logs.values())
        audit_text = audit.read_text() if audit.exists() else ""
        report["audit_records"] = len(audit_text.splitlines())
        report["audit_key_ids"] = sorted({json.loads(line).get("key_id")
                                          for line in audit_text.splitlines() if line})
        report["serve_log_files"] = sorted(os.path.basename(p) for p in serve_logs)
    finally:
        serve.shutdown()
        ray.shutdown()
    return report


if __name__ == "__main__":
    work = Path(sys.argv[1])
    work.mkdir(parents=True, exist_ok=True)
    print(json.dumps(main(work), default=str))
