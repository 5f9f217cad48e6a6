"""`serve run configs/local.yaml` as a user runs it, over real HTTP (its own Ray instance)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import ROOT, free_port, isolated_serve_env, wait_until
from tests.corpus import DOCUMENTS, QUESTIONS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_cache):
    tmp = tmp_path_factory.mktemp("serve-run")
    cfg = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())
    port = free_port()
    cfg["http_options"]["port"] = port
    cfg["logging_config"]["enable_access_log"] = False
    args = cfg["applications"][0]["args"]
    args["retriever"]["config"]["path"] = str(tmp / "qdrant")
    args["generator"]["config"]["backend"]["cache_dir"] = str(model_cache)
    args["generator"]["config"]["default_max_tokens"] = 16
    # the config's commented-out evidence model, on: loaded in the generator's replica with
    # the embedder's encoder (deployments/generator.py)
    args["generator"]["config"]["evidence"]["model"] = {
        "model": "sentence-transformers/all-MiniLM-L6-v2", "runtime": "onnx",
        "quantize": "int8", "torch_threads": 1, "max_seq_length": 128}
    path = tmp / "local.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           **isolated_serve_env()}  # as scripts/serve_local.sh sets it
    log = open(tmp / "serve.log", "w")
    start = time.monotonic()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("serve")), "run", "--address", "local", str(path)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def ready():
        if proc.poll() is not None:
            raise RuntimeError(f"serve run exited: {(tmp / 'serve.log').read_text()[-3000:]}")
        try:
            return httpx.get(base + "/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout_s=300, interval_s=0.5)
        cold_start_s = time.monotonic() - start
        yield base, cold_start_s
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_serve_run_local_config_answers_over_http(served):
    base, cold_start_s = served
    print(f"cold start of serve run configs/local.yaml: {cold_start_s:.1f}s")
    with httpx.Client(base_url=base, timeout=120) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        # the generator replica loaded the evidence model with the embedder's encoder
        scorer = c.get("/readyz").json()["stages"]["generator"]["evidence_scorer"]
        assert scorer["loaded"] is True and scorer["error"] is None, scorer
        r = c.post("/v1/documents", json={"documents": DOCUMENTS})
        assert r.status_code == 200 and {d["status"] for d in r.json()["documents"]} == {"created"}
        question, doc_id = QUESTIONS[1]
        q = c.post("/v1/query", json={"query": question, "rerank_top_n": 2})
        assert q.status_code == 200, q.text
        body = q.json()
        assert body["citations"][0]["doc_id"] == doc_id and body["answer"].strip()
        bad = c.post("/v1/query", json={"query": "", "top_k": 3})
        assert bad.status_code == 422 and bad.json()["error"]["message"]
