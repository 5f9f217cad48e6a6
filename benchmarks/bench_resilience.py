"""Resilience benchmark: /v1/query latency while the primary generator is down (before and after
its circuit breaker trips), and failed requests while a replica is killed with ``ray.kill``.

    .venv/bin/python benchmarks/bench_resilience.py --requests 30

It starts a local Ray + Serve on free loopback ports, an OpenAI-compatible server process
(``tests/llm_server.py``) as the primary generator with the extractive backend as fallback, and
the rest of ``configs/local.yaml``'s graph (bundled models, Qdrant in a temp folder, query cache
off so that every request runs the pipeline). One client, requests one after another.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import QUESTIONS, RAY_ENV, ROOT, free_port, pct  # noqa: E402


def summary(lat: list[float]) -> str:
    if not lat:
        return "n=0"
    return (f"n={len(lat)} p50={pct(lat, 50):.0f} ms p95={pct(lat, 95):.0f} ms "
            f"max={max(lat):.0f} ms mean={statistics.mean(lat):.0f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=30, help="per phase")
    ap.add_argument("--primary-timeout", type=float, default=2.0, help="primary timeout_s")
    ap.add_argument("--kill-window", type=int, default=25, help="requests around each kill")
    args = ap.parse_args()

    import ray
    from ray import serve

    from graphs.rag import build_app
    from ragserve.ingest.loaders import load_documents

    tmp = Path(tempfile.mkdtemp(prefix="ragserve-resilience-"))
    llm_port = free_port()
    llm = subprocess.Popen([sys.executable, "-m", "tests.llm_server", "--port", str(llm_port)],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    admin = f"http://127.0.0.1:{llm_port}/admin/mode"

    cfg = yaml.safe_load((ROOT / "configs/local.yaml").read_text())
    app_args = cfg["applications"][0]["args"]
    app_args["retriever"]["config"]["path"] = str(tmp / "qdrant")
    gen = app_args["generator"]["config"]
    gen["backend"] = {"backend": "openai", "base_url": f"http://127.0.0.1:{llm_port}/v1",
                      "model": "primary", "timeout_s": args.primary_timeout}
    gen["fallbacks"] = [{"backend": "extractive"}]
    gen["breaker"] = {"failure_threshold": 3, "reset_timeout_s": 300}
    app_args["ingress"]["config"]["cache"]["queries"] = {"enabled": False}
    port = free_port()
    ray.init(include_dashboard=False, log_to_driver=False, runtime_env=RAY_ENV)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(app_args), name="ragserve", route_prefix="/")
        docs = [d.model_dump(mode="json") for d in load_documents(
            [ROOT / "README.md", ROOT / "docs", ROOT / "k8s" / "README.md"], root=ROOT)]
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300)
        c.post("/v1/documents", json={"documents": docs}).raise_for_status()

        def run(n: int, label: str) -> list[dict]:
            out = []
            for i in range(n):
                t = time.perf_counter()
                r = c.post("/v1/query", json={"query": QUESTIONS[i % len(QUESTIONS)],
                                              "max_tokens": 64})
                ms = (time.perf_counter() - t) * 1000
                out.append({"ms": ms, "status": r.status_code, "body": r.json()})
            return out

        run(3, "warm")
        ok = run(args.requests, "primary up")
        print(f"primary up:   {summary([r['ms'] for r in ok])}  answered by "
              f"{sorted({r['body']['backends']['generator'] for r in ok})}")
        for k, (mode, extra) in enumerate((("hang", {}), ("error", {"status": 503}))):
            # A fresh breaker for each fault: a changed config redeploys the generator.
            httpx.post(admin, json={"mode": "ok"}).raise_for_status()
            gen["breaker"]["reset_timeout_s"] = 300 + k
            serve.run(build_app(app_args), name="ragserve", route_prefix="/")
            run(2, "warm")
            httpx.post(admin, json={"mode": mode, **extra}).raise_for_status()
            down = run(args.requests, mode)
            tripped = next((i for i, r in enumerate(down) if any(
                a["reason"] == "circuit open" for a in r["body"].get("generation", []))),
                len(down))
            before, after = down[:tripped], down[tripped:]
            failed = sum(r["status"] != 200 for r in down)
            print(f"primary {mode:5s} before the breaker trips: {summary([r['ms'] for r in before])}")
            print(f"primary {mode:5s} after the breaker trips:  {summary([r['ms'] for r in after])}"
                  f"  (failed requests: {failed}; answered by "
                  f"{sorted({r['body']['backends']['generator'] for r in down})})")
        httpx.post(admin, json={"mode": "ok"}).raise_for_status()

        for deployment, path in (("Reranker", "/v1/search"), ("Retriever", "/v1/search"),
                                 ("Embedder", "/v1/search"), ("Generator", "/v1/query")):
            name = next(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                        if a["name"].startswith(f"SERVE_REPLICA::ragserve#{deployment}#"))
            results: list[tuple[int, bool, float]] = []
            stop = threading.Event()

            def stream():
                i = 0
                while not stop.is_set():
                    t = time.perf_counter()
                    extra = {"max_tokens": 32} if path == "/v1/query" else {}
                    r = c.post(path, json={"query": QUESTIONS[i % len(QUESTIONS)], **extra})
                    results.append((r.status_code, r.status_code == 200 and r.json()["degraded"],
                                    (time.perf_counter() - t) * 1000))
                    i += 1

            worker = threading.Thread(target=stream)
            worker.start()
            while len(results) < 3:
                time.sleep(0.05)
            t_kill = time.perf_counter()
            ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
            while True:
                time.sleep(0.25)
                names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                         if a["name"].startswith(f"SERVE_REPLICA::ragserve#{deployment}#")]
                status = serve.status().applications["ragserve"].deployments[deployment].status
                if names and names[0] != name and status == "HEALTHY":
                    break
            restored = time.perf_counter() - t_kill
            n0 = len(results)
            while len(results) < n0 + 3:
                time.sleep(0.05)
            stop.set()
            worker.join()
            failed = sum(s != 200 for s, _, _ in results)
            degraded = sum(bool(d) for _, d, _ in results)
            print(f"kill {deployment:9s} under {path}: {len(results)} requests, {failed} failed "
                  f"({sorted({s for s, _, _ in results if s != 200})}), {degraded} degraded, "
                  f"replica back in {restored:.1f} s, slowest {max(m for _, _, m in results):.0f} ms")
        c.close()
    finally:
        serve.shutdown()
        ray.shutdown()
        llm.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
