"""Service benchmark: cold start of `serve run CONFIG`, RSS of the whole stack, latency of
/v1/search and /v1/query at one client, uncached and cached, and the embedding cache on a
re-ingest. Loopback only, bounded in requests and time.

    .venv/bin/python benchmarks/bench_service.py --config configs/local.yaml --requests 50 [--redis]

It starts its own `serve run` (its own Ray instance) on a free port with the index in a temp
folder (and, with --redis, its own redis-server as the cache store), ingests the project's docs
(README.md, docs/, k8s/README.md) and then measures, one request at a time:
- uncached: every request a new question (the query cache misses, the embedder runs);
- cached: the same questions again (query-cache hits);
- re-ingest: every document deleted and ingested again (the embedding cache answers).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import QUESTIONS, ROOT, free_port, pct  # noqa: E402


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def process_name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "?"
    return cmd.split("/")[-1][:60]


def memory_mib(pids: list[int]) -> tuple[float, float]:
    rss = pss = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, pss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/local.yaml")
    ap.add_argument("--requests", type=int, default=50, help="per endpoint")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--redis", action="store_true",
                    help="start a redis-server and use it as the cache store")
    ap.add_argument("--model-cache", default=".ragserve/models",
                    help="converted-LLM cache; a fresh folder measures the first-ever start")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ragserve-bench-"))
    cfg = yaml.safe_load((ROOT / args.config).read_text())
    port = free_port()
    cfg["http_options"].update(host="127.0.0.1", port=port)
    cfg.setdefault("logging_config", {}).update(enable_access_log=False, log_level="WARNING")
    app_args = cfg["applications"][0]["args"]
    app_args.setdefault("retriever", {}).setdefault("config", {})["path"] = str(tmp / "qdrant")
    gen = app_args.setdefault("generator", {}).setdefault("config", {})
    if gen.get("backend", {}).get("backend", "local") == "local":
        gen.setdefault("backend", {"backend": "local"})["cache_dir"] = str(Path(args.model_cache).resolve())
    redis_proc = None
    if args.redis:
        redis_port = free_port()
        redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL)
        cache = app_args.setdefault("ingress", {}).setdefault("config", {}).setdefault("cache", {})
        cache["redis_url"] = f"redis://127.0.0.1:{redis_port}/0"
    cfg_path = tmp / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    serve_bin = str(Path(sys.executable).with_name("serve"))
    base = f"http://127.0.0.1:{port}"

    t0 = time.monotonic()
    proc = subprocess.Popen([serve_bin, "run", "--address", "local", str(cfg_path)], cwd=ROOT,
                            env=env, stdout=open(tmp / "serve.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = t0 + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                print((tmp / "serve.log").read_text()[-3000:])
                return 1
            try:
                if httpx.get(base + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        cold = time.monotonic() - t0
        print(f"cold start (serve run → /readyz 200): {cold:.1f} s")

        sys.path.insert(0, str(ROOT))
        from ragserve.ingest.loaders import load_documents

        docs = [d.model_dump(mode="json") for d in load_documents(
            [ROOT / "README.md", ROOT / "docs", ROOT / "k8s" / "README.md"], root=ROOT)]
        with httpx.Client(base_url=base, timeout=300) as c:
            t = time.perf_counter()
            r = c.post("/v1/documents", json={"documents": docs})
            r.raise_for_status()
            body = r.json()
            print(f"ingest: {len(docs)} documents, {body['chunks_embedded']} chunks in "
                  f"{time.perf_counter() - t:.2f} s")
            for endpoint, extra in (("/v1/search", {}), ("/v1/query", {"max_tokens": args.max_tokens})):
                c.post(endpoint, json={"query": "warm-up question", **extra}).raise_for_status()
                for phase in ("uncached", "cached"):
                    if phase == "cached":  # fill: one request per distinct question
                        for q in QUESTIONS:
                            c.post(endpoint, json={"query": q, **extra}).raise_for_status()
                    lat, stage, outcomes = [], {}, {}
                    for i in range(args.requests):
                        q = QUESTIONS[i % len(QUESTIONS)]
                        if phase == "uncached":  # a new question every time
                            q = f"{q} (variant {i})"
                        t = time.perf_counter()
                        r = c.post(endpoint, json={"query": q, **extra})
                        lat.append((time.perf_counter() - t) * 1000)
                        r.raise_for_status()
                        body = r.json()
                        outcome = body["cache"]["query"]
                        outcomes[outcome] = outcomes.get(outcome, 0) + 1
                        for k, v in body["timings"].items():
                            stage.setdefault(k, []).append(v)
                    print(f"{endpoint} {phase}: n={len(lat)} p50={pct(lat, 50):.1f} ms "
                          f"p95={pct(lat, 95):.1f} ms p99={pct(lat, 99):.1f} ms "
                          f"mean={statistics.mean(lat):.1f} ms  query cache: {outcomes}")
                    if phase == "uncached":
                        print("   stage p50 (ms): " + ", ".join(
                            f"{k}={pct(v, 50):.1f}" for k, v in stage.items() if k != "total_ms"))
            for doc in docs:
                c.delete(f"/v1/documents/{doc['id']}").raise_for_status()
            t = time.perf_counter()
            r = c.post("/v1/documents", json={"documents": docs})
            r.raise_for_status()
            again, took = r.json(), time.perf_counter() - t
            hits, misses = again["cache"]["embedding_hits"], again["cache"]["embedding_misses"]
            print(f"re-ingest after delete: {again['chunks_embedded']} chunks in {took:.2f} s, "
                  f"embedding cache {hits} hits / {misses} misses "
                  f"(hit ratio {hits / max(1, hits + misses):.2f})")
            print("cache counters: " + str(c.get("/readyz").json()["stages"]["cache"]["tiers"]))
        rss, pss = memory_mib(descendants(proc.pid))
        pids = descendants(proc.pid)
        print(f"memory of the whole stack: RSS {rss:.0f} MiB, PSS {pss:.0f} MiB "
              f"({len(pids)} processes)")
        per = sorted(((memory_mib([p])[1], process_name(p)) for p in pids), reverse=True)
        print("   largest by PSS: " + ", ".join(f"{n} {m:.0f} MiB" for m, n in per[:8]))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        if redis_proc is not None:
            redis_proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
