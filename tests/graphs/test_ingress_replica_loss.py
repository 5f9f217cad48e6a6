"""Losing an ingress replica in the cluster shape: two ingress replicas sharing a real Redis
(``redis-server`` started by the test), steady ``/v1/search`` traffic over HTTP, one ingress
replica killed with ``ray.kill``. At most the killed replica's in-flight requests may fail —
each client has one request in flight at a time, so never more than the number of clients.
The counts are printed (``-s``) for docs/benchmarks/caching-and-resilience.md."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import ray
from ray import serve

from graphs.rag import build_search_app
from tests.conftest import RedisServer, small_app_args, wait_until, wait_until_routed
from tests.corpus import DOCUMENTS, QUESTIONS

pytestmark = pytest.mark.slow
APP = "ingress-loss-test"
PREFIX = "/ingress-loss"
CLIENTS = 4


def ingress_replicas() -> list[str]:
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == "serve"
                  and a["name"].startswith(f"SERVE_REPLICA::{APP}#Ingress#"))


@pytest.fixture(scope="module")
def app(serve_instance, tmp_path_factory, model_cache):
    tmp = tmp_path_factory.mktemp("ingress-loss")
    redis = RedisServer(tmp).start()
    args = small_app_args(tmp, model_cache)
    args.pop("generator")
    args["ingress"] = {"deployment": {"num_replicas": 2,
                                      "ray_actor_options": {"num_cpus": 0.25}},
                       "config": {"cache": {"redis_url": redis.url}}}
    serve.run(build_search_app(args), name=APP, route_prefix=PREFIX)
    wait_until(lambda: len(ingress_replicas()) == 2, timeout_s=120)
    wait_until_routed(serve_instance + PREFIX)
    client = httpx.Client(base_url=serve_instance + PREFIX, timeout=60)
    assert client.post("/v1/documents", json={"documents": DOCUMENTS}).status_code == 200
    yield client
    client.close()
    serve.delete(APP)
    redis.stop()


def test_killing_one_of_two_ingress_replicas_loses_at_most_its_in_flight_requests(app):
    before = ingress_replicas()
    results: list[tuple[float, int | str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(k: int) -> None:
        with httpx.Client(base_url=str(app.base_url), timeout=60) as c:
            i = 0
            while not stop.is_set():
                q = f"{QUESTIONS[(k + i) % len(QUESTIONS)][0]} ({k}-{i})"  # no query-cache hits
                t0 = time.monotonic()
                try:
                    outcome: int | str = c.post("/v1/search", json={"query": q}).status_code
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                with lock:
                    results.append((t0, outcome))
                i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(3)
    killed_at = time.monotonic()
    ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)

    def replaced() -> bool:
        now = ingress_replicas()
        return len(now) == 2 and before[0] not in now

    wait_until(replaced, timeout_s=120, interval_s=0.5)
    replaced_s = time.monotonic() - killed_at
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(timeout=60)

    failed = [(round(t0 - killed_at, 2), o) for t0, o in results if o != 200]
    after_kill = [o for t0, o in results if t0 >= killed_at]
    longest_gap = max((b - a for (a, _), (b, _) in zip(sorted(results), sorted(results)[1:])),
                      default=0.0)
    print(f"\ningress replica killed: {len(results)} requests, {len(failed)} failed "
          f"{failed}, {len(after_kill)} sent after the kill, replacement running after "
          f"{replaced_s:.1f} s, longest gap between request starts {longest_gap:.2f} s")
    assert len(failed) <= CLIENTS, failed  # only what was in flight on the killed replica
    # What the killed replica had in flight is lost as a dropped connection, a 503, or a 500:
    # Serve's proxy answers 500 for a request whose replica actor died under it (ray 2.60,
    # ray/serve/_private/http_util.py maps RayActorError to 500 — not ours to change; seen
    # for requests the replica had accepted within ~0.1 s of the kill). Anything later must
    # be served.
    assert all(o in (200, 503) or isinstance(o, str) or (o == 500 and t < 1.0)
               for t, o in failed), failed
    assert len(after_kill) > 20  # traffic kept flowing through the other replica
