"""The OpenAI layer's cost: ``/v1/chat/completions`` against ``/v1/query`` in the same run.

    .venv/bin/python benchmarks/bench_openai.py [--rounds 20] [--max-tokens 32]

The embedded default (``configs/local.yaml``'s graph under ``serve.run``, index in a temp
folder, this project's docs ingested, the query cache off so every request runs the pipeline),
one client, requests interleaved round-robin over the four kinds so that drift hits them alike:

- streamed ``/v1/query`` and streamed ``/v1/chat/completions``: time to first token (the first
  ``token`` event / the first chunk with content) and to the end;
- whole ``/v1/query`` and whole ``/v1/chat/completions``: latency, and the time outside the
  service (client latency − the response's ``timings.total_ms``): the difference between the
  routes is what the OpenAI layer adds.

Figures are p50/p95 in ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import QUESTIONS, RAY_ENV, ROOT, free_port, pct  # noqa: E402


def streamed(c: httpx.Client, path: str, body: dict, openai_shape: bool) -> tuple[float, float]:
    t = time.perf_counter()
    first = None
    with c.stream("POST", path, json=body) as r:
        r.raise_for_status()
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and first is None:
                if openai_shape:
                    data = line[6:]
                    if data != "[DONE]" and any(
                            ch["delta"].get("content") for ch in json.loads(data)["choices"]):
                        first = time.perf_counter()
                elif event == "token":
                    first = time.perf_counter()
    end = time.perf_counter()
    return ((first or end) - t) * 1000, (end - t) * 1000


def whole(c: httpx.Client, path: str, body: dict, openai_shape: bool) -> tuple[float, float]:
    t = time.perf_counter()
    r = c.post(path, json=body)
    ms = (time.perf_counter() - t) * 1000
    r.raise_for_status()
    data = r.json()
    server = (data["ragserve"] if openai_shape else data)["timings"]["total_ms"]
    return ms, ms - server


def summary(name: str, values: list[float]) -> str:
    return f"{name:44s} p50 {pct(values, 50):8.1f}  p95 {pct(values, 95):8.1f}  (n={len(values)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()

    import ray
    from ray import serve

    from graphs.rag import build_app
    from ragserve.ingest.loaders import load_documents

    tmp = Path(tempfile.mkdtemp(prefix="ragserve-openai-"))
    cfg = yaml.safe_load((ROOT / "configs/local.yaml").read_text())
    app_args = cfg["applications"][0]["args"]
    app_args["retriever"]["config"]["path"] = str(tmp / "qdrant")
    app_args["ingress"]["config"]["cache"].update({"queries": {"enabled": False}})
    app_args["generator"]["config"]["backend"]["cache_dir"] = str(
        (ROOT / ".ragserve" / "models").resolve())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ray.init(include_dashboard=False, log_to_driver=False, runtime_env=RAY_ENV)
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    try:
        serve.run(build_app(app_args), name="ragserve", route_prefix="/")
        docs = [d.model_dump(mode="json") for d in load_documents(
            [ROOT / "README.md", ROOT / "docs", ROOT / "k8s" / "README.md"], root=ROOT)]
        with httpx.Client(base_url=url, timeout=600) as c:
            for i in range(0, len(docs), 32):
                c.post("/v1/documents", json={"documents": docs[i:i + 32]}).raise_for_status()
            print(f"ingested {len(docs)} documents", flush=True)
            opts = {"max_tokens": args.max_tokens, "rerank_top_n": 4}
            results: dict[str, list[float]] = {k: [] for k in (
                "query_ttft", "query_stream", "chat_ttft", "chat_stream",
                "query", "chat", "query_outside", "chat_outside")}
            for r in range(args.rounds + 1):  # round 0 warms up
                q = QUESTIONS[r % len(QUESTIONS)]
                chat = {"model": "ragserve", "messages": [{"role": "user", "content": q}], **opts}
                a = streamed(c, "/v1/query", {"query": q, "stream": True, **opts}, False)
                b = streamed(c, "/v1/chat/completions", {**chat, "stream": True}, True)
                x = whole(c, "/v1/query", {"query": q, **opts}, False)
                y = whole(c, "/v1/chat/completions", chat, True)
                print(f"round {r}: ttft query {a[0]:.0f} chat {b[0]:.0f} ms", flush=True)
                if r == 0:
                    continue
                results["query_ttft"].append(a[0]); results["query_stream"].append(a[1])
                results["chat_ttft"].append(b[0]); results["chat_stream"].append(b[1])
                results["query"].append(x[0]); results["query_outside"].append(x[1])
                results["chat"].append(y[0]); results["chat_outside"].append(y[1])
        print(f"\n{args.rounds} rounds, max_tokens {args.max_tokens}, one client (ms):")
        for name, key in [("/v1/query streamed: first token", "query_ttft"),
                          ("/v1/chat/completions streamed: first token", "chat_ttft"),
                          ("/v1/query streamed: whole answer", "query_stream"),
                          ("/v1/chat/completions streamed: whole answer", "chat_stream"),
                          ("/v1/query: latency", "query"),
                          ("/v1/chat/completions: latency", "chat"),
                          ("/v1/query: outside the service", "query_outside"),
                          ("/v1/chat/completions: outside the service", "chat_outside")]:
            print(summary(name, results[key]))
        extra = [c - q for c, q in zip(results["chat_outside"], results["query_outside"])]
        print(summary("OpenAI layer (chat − query, outside service)", extra))
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
