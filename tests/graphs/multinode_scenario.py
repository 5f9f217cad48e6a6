"""Two Ray nodes on this machine, the graph placed across them by its app config alone.

The head node holds the data stages (``data_node``: retriever, reranker, generator — the Qdrant
folder lives on its disk) and, like the worker, one ``ingress_node`` and one ``model_node``:
each ingress and embedder replica asks for a whole unit, so two replicas of each land one per
node, the way a node group spreads a stage in a real cluster. Then:

1. placement: each deployment's replicas are on the node its resources chose (node ids from
   Serve's own instance details);
2. ingest and search over HTTP through Serve's proxy on the head;
3. shared state: with a real ``redis-server``, a search answered by the head's ingress replica
   is a query-cache hit when asked of the worker's (each replica's own HTTP port, direct
   ingress), and a session started on one is continued on the other;
4. node loss: a few clients stream ``/v1/search``; the worker's raylet and every process on
   it are killed at once; the head keeps answering, and a replacement node with the lost
   node's resources joins (as KubeRay replaces a pod), where Serve reschedules the two lost
   replicas. Every outcome is counted with its start time, and the recovery time (first
   success started after the kill) is recorded.

Run by ``tests/graphs/test_multinode.py`` in a process of its own (its own cluster; the test
session's single-node Ray cannot share a process with it); prints one JSON report on its last
line:

    .venv/bin/python -m tests.graphs.multinode_scenario /tmp/workdir
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import httpx

from scripts.local_ray import LocalCluster
from tests.conftest import RedisServer, small_app_args, wait_until
from tests.corpus import DOCUMENTS, QUESTIONS

APP = "multinode"
HEAD = {"CPU": 2, "ingress_node": 1, "model_node": 1, "data_node": 1}
WORKER = {"CPU": 2, "ingress_node": 1, "model_node": 1}
CLIENTS = 4
ENV_VARS = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "TOKENIZERS_PARALLELISM": "false"}
# Where each deployment's replicas must run: one per node, or on the head only.
PLACEMENT = {"Ingress": "one per node", "Embedder": "one per node", "Retriever": "head",
             "Reranker": "head", "Generator": "head"}


def placed_args(tmp: Path, model_cache: Path, redis_url: str | None) -> dict:
    """The small test args with placement by resources only; without ``redis_url`` the query
    cache is off (the benchmark: every request runs the pipeline)."""
    args = small_app_args(tmp, model_cache)
    args["generator"]["config"] = {"backend": {"backend": "extractive"}}

    def on(section: str, replicas: int, **resources: float) -> None:
        deployment = args[section].setdefault("deployment", {})
        deployment["num_replicas"] = replicas
        deployment.setdefault("ray_actor_options", {})["resources"] = resources

    on("ingress", 2, ingress_node=1)  # a whole unit each: one replica per node
    on("embedder", 2, model_node=1)
    for section in ("retriever", "reranker", "generator"):
        on(section, 1, data_node=0.25)
    ingress = args["ingress"].setdefault("config", {})
    if redis_url is not None:
        ingress["cache"] = {"redis_url": redis_url}
    else:
        ingress["cache"] = {"queries": {"enabled": False}}
    return args


def replicas(app: str = APP) -> dict[str, list[dict]]:
    """Serve's view: deployment -> its RUNNING replicas (node_id, pid, actor_name)."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    deployments = details.get("applications", {}).get(app, {}).get("deployments", {})
    return {name: [r for r in d.get("replicas", []) if r.get("state") == "RUNNING"]
            for name, d in deployments.items()}


def placement(cluster: LocalCluster, app: str = APP) -> dict[str, list[str]]:
    """deployment -> sorted node names of its running replicas."""
    names = cluster.node_names
    return {d: sorted(names.get(r["node_id"], r["node_id"]) for r in rs)
            for d, rs in replicas(app).items()}


def direct_ports(app: str = APP) -> dict[str, int]:
    """Ingress replica node id -> the HTTP port its own server listens on (direct ingress)."""
    import psutil

    ports: dict[str, int] = {}
    for r in replicas(app).get("Ingress", []):
        for conn in psutil.Process(r["pid"]).net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and 30000 <= conn.laddr.port < 31000:
                ports[r["node_id"]] = conn.laddr.port
    return ports


def ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def ingest(base: str) -> None:
    with httpx.Client(base_url=base, timeout=120) as c:
        for attempt in range(5):  # a stage still loading on a busy machine: 503, retry
            r = c.post("/v1/documents", json={"documents": DOCUMENTS})
            if r.status_code != 503:
                break
            time.sleep(float(r.headers.get("retry-after", "1")) * 2 ** attempt)
        assert r.status_code == 200, (r.status_code, r.text[:2000])


class Load:
    """``clients`` threads, each with one ``/v1/search`` in flight at a time (unique queries:
    no query-cache hits), every outcome kept as (start, end, status or exception name,
    retry-after header)."""

    def __init__(self, base: str, clients: int = CLIENTS) -> None:
        self.base = base
        self.results: list[tuple[float, float, int | str, str | None]] = []
        self.keys: list[tuple[int, int]] = []  # (client, request number) of each result
        self.bodies: dict[tuple[int, int], str] = {}  # non-200 answers: server header, body
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(k,), daemon=True)
                         for k in range(clients)]

    def _client(self, k: int) -> None:
        with httpx.Client(base_url=self.base, timeout=120) as c:
            i = 0
            while not self._stop.is_set():
                q = f"{QUESTIONS[(k + i) % len(QUESTIONS)][0]} ({k}-{i}-{time.monotonic()})"
                t0 = time.monotonic()
                retry_after = None
                try:
                    r = c.post("/v1/search", json={"query": q})
                    outcome: int | str = r.status_code
                    retry_after = r.headers.get("retry-after")
                    if r.status_code != 200:  # who answered it, for the report
                        self.bodies[(k, i)] = (f"server={r.headers.get('server')} "
                                               f"{r.text[:300]}")
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                with self._lock:
                    self.results.append((t0, time.monotonic(), outcome, retry_after))
                    self.keys.append((k, i))
                i += 1

    def start(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=150)

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def successes_since(self, t: float) -> int:
        with self._lock:
            return sum(1 for t0, _, o, _ in self.results if t0 >= t and o == 200)


def node_loss(cluster: LocalCluster, base: str, victim, replacement: dict | None) -> dict:
    """Kill ``victim`` under load; optionally join a ``replacement`` node; the outcomes."""
    load = Load(base).start()
    try:
        wait_until(lambda: load.successes_since(0) >= 10, timeout_s=180, interval_s=0.2)
        before = placement(cluster)
        killed_at = time.monotonic()
        cluster.kill(victim)
        killed_s = time.monotonic() - killed_at
        # Recovery: the first request started after the kill that succeeds.
        wait_until(lambda: load.successes_since(killed_at) >= 1, timeout_s=300, interval_s=0.1)
        joined_s = replaced_s = None
        if replacement is not None:
            cluster.add_node(replacement)
            joined_s = time.monotonic() - killed_at

            def restored() -> bool:
                now = replicas()
                return all(len(now.get(d, [])) == len(before[d]) for d in before)

            wait_until(restored, timeout_s=300, interval_s=0.5)
            replaced_s = time.monotonic() - killed_at
        settle = load.count()
        wait_until(lambda: load.count() >= settle + 10, timeout_s=120, interval_s=0.2)
    finally:
        load.stop()
    bodies = {load.results[n][0]: load.bodies.get(key) for n, key in enumerate(load.keys)}
    results = sorted(load.results)
    first_ok = min((t0 for t0, _, o, _ in results if t0 >= killed_at and o == 200), default=None)
    in_flight = [(t0, t1) for t0, t1, _, _ in results if t0 < killed_at < t1]
    failed = [{"start_s": round(t0 - killed_at, 2), "end_s": round(t1 - killed_at, 2),
               "outcome": o, "retry_after": ra, "answer": bodies.get(t0)}
              for t0, t1, o, ra in results if o != 200]
    gaps = [b[1] - a[1] for a, b in zip(results, results[1:]) if a[1] >= killed_at - 5]
    return {
        "requests": len(results),
        "after_kill": sum(1 for t0, *_ in results if t0 >= killed_at),
        "ok_after_kill": sum(1 for t0, _, o, _ in results if t0 >= killed_at and o == 200),
        "in_flight_at_kill": len(in_flight),
        "failed": failed,
        "kill_call_s": round(killed_s, 2),
        "recovery_s": round(first_ok - killed_at, 2) if first_ok is not None else None,
        "replacement_joined_s": round(joined_s, 2) if joined_s is not None else None,
        "replicas_restored_s": round(replaced_s, 2) if replaced_s is not None else None,
        "longest_gap_between_answers_s": round(max(gaps, default=0.0), 2),
        "placement_before": before,
    }


def shared_state(cluster: LocalCluster) -> dict:
    """A search and a session through the head's ingress replica, then through the worker's."""
    ports = direct_ports()
    head = cluster.head_node_id
    other = next(n for n in ports if n != head)
    via_head = f"http://127.0.0.1:{ports[head]}"
    via_worker = f"http://127.0.0.1:{ports[other]}"
    q = QUESTIONS[0][0]
    out: dict = {"ports": {"head": ports[head], "worker": ports[other]}}
    with httpx.Client(timeout=120) as c:
        first = c.post(f"{via_head}/v1/search", json={"query": q}).json()
        second = c.post(f"{via_worker}/v1/search", json={"query": q}).json()
        out["search"] = {"head": first["cache"], "worker": second["cache"],
                         "same_results": [x["chunk_id"] for x in first["results"]]
                         == [x["chunk_id"] for x in second["results"]],
                         "top_doc": second["results"][0]["doc_id"],
                         "expected_doc": QUESTIONS[0][1]}
        session = f"multinode-{os.getpid()}"
        opened = c.post(f"{via_head}/v1/query", json={
            "query": "How often does the espresso machine need descaling?",
            "session_id": session, "max_tokens": 32})
        follow = c.post(f"{via_worker}/v1/query", json={
            "query": "And which tablets should I use for it?",
            "session_id": session, "max_tokens": 32})
        alone = c.post(f"{via_worker}/v1/query", json={
            "query": "And which tablets should I use for it?", "max_tokens": 32})
        out["session"] = {"statuses": [opened.status_code, follow.status_code,
                                       alone.status_code],
                          "opened": opened.json()["cache"], "follow": follow.json()["cache"],
                          "alone": alone.json()["cache"],
                          "follow_top_doc": follow.json()["citations"][0]["doc_id"]}
    return out


def main(workdir: Path) -> dict:
    from ray import serve

    from graphs.rag import build_app

    report: dict = {}
    redis = RedisServer(workdir).start()
    cluster = LocalCluster(HEAD, [WORKER], env_vars=ENV_VARS)
    try:
        t0 = time.monotonic()
        base = cluster.start()
        report["cluster_start_s"] = round(time.monotonic() - t0, 1)
        report["nodes"] = {"head": HEAD, "worker": WORKER}
        t0 = time.monotonic()
        serve.run(build_app(placed_args(workdir, workdir / "models", redis.url)), name=APP,
                  route_prefix="/")
        wait_until(lambda: ready(base), timeout_s=300, interval_s=1)
        report["app_ready_s"] = round(time.monotonic() - t0, 1)
        status = serve.status().applications[APP]
        report["status"] = {"app": str(status.status),
                            "deployments": {d: str(s.status)
                                            for d, s in status.deployments.items()}}
        report["placement"] = placement(cluster)
        ingest(base)
        with httpx.Client(base_url=base, timeout=120) as c:
            r = c.post("/v1/search", json={"query": QUESTIONS[1][0]})
            report["search"] = {"status": r.status_code,
                                "top_doc": r.json()["results"][0]["doc_id"],
                                "expected_doc": QUESTIONS[1][1]}
        report["shared_state"] = shared_state(cluster)
        report["node_loss"] = node_loss(cluster, base, cluster.workers[0], WORKER)
        report["placement_after"] = placement(cluster)
        print(f"node loss: {json.dumps(report['node_loss'])}", file=sys.stderr)
    finally:
        cluster.shutdown()
        redis.stop()
    return report


if __name__ == "__main__":
    for key, value in ENV_VARS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    print(json.dumps(main(Path(sys.argv[1]))))
