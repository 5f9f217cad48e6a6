"""A real two-node Ray cluster on this machine (``multinode_scenario.py``): a head and a worker
raylet with custom resources, the graph's stages placed on them by
``deployment.ray_actor_options.resources`` alone, ingest and queries over HTTP, Redis-backed
caches and sessions shared by ingress replicas on different nodes, and the worker node killed
under a stream of ``/v1/search`` requests.

The scenario runs in a process of its own (a driver belongs to one cluster, and the session's
single-node Ray may already be up in this one). Its report is printed (``-s``) and written to
``multinode-report.json`` in the test's temporary folder; the recovery time is also a junit
property (``record_property``). Figures: docs/benchmarks/graph.md ("Two nodes")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.graphs.multinode_scenario import CLIENTS, PLACEMENT

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
WINDOW_S = 5.0  # after the kill: how long requests may still fail


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    work = tmp_path_factory.mktemp("multinode")
    r = subprocess.run([sys.executable, "-m", "tests.graphs.multinode_scenario", str(work)],
                       cwd=ROOT, capture_output=True, text=True, timeout=1100)
    assert r.returncode == 0, r.stderr[-6000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    (work / "multinode-report.json").write_text(json.dumps(out, indent=2))
    print(f"\nmulti-node report ({work / 'multinode-report.json'}):\n{json.dumps(out)}")
    return out


def test_each_stage_runs_on_the_node_its_resources_chose(report):
    assert report["status"]["app"].endswith("RUNNING"), report["status"]
    assert all(s.endswith("HEALTHY") for s in report["status"]["deployments"].values())
    placed = report["placement"]
    assert set(placed) == set(PLACEMENT), placed
    for deployment, where in PLACEMENT.items():
        if where == "one per node":
            assert placed[deployment] == ["head", "worker1"], (deployment, placed)
        else:
            assert placed[deployment] == [where], (deployment, placed)


def test_the_graph_answers_across_nodes_over_http(report):
    search = report["search"]
    assert search["status"] == 200 and search["top_doc"] == search["expected_doc"], search


def test_a_query_answered_on_one_node_is_a_cache_hit_on_the_other(report):
    shared = report["shared_state"]
    assert shared["ports"]["head"] != shared["ports"]["worker"]  # two replicas' own servers
    search = shared["search"]
    assert search["head"]["query"] == "miss" and search["worker"]["query"] == "hit", search
    assert search["worker"]["embedding_misses"] == 0  # nothing recomputed on the worker
    assert search["same_results"] and search["top_doc"] == search["expected_doc"]


def test_a_session_started_on_one_node_continues_on_the_other(report):
    session = report["shared_state"]["session"]
    assert session["statuses"] == [200, 200, 200], session
    assert session["opened"]["session_turns"] == 0
    assert session["follow"]["session_turns"] == 1  # the head's turn, read from Redis
    assert session["alone"]["session_turns"] == 0  # without the session id: no history
    assert session["follow_top_doc"] == "notes/coffee.txt"  # "it" resolved by the earlier turn


def test_losing_the_worker_node_fails_only_requests_of_its_first_seconds(report, record_property):
    loss = report["node_loss"]
    record_property("recovery_s", loss["recovery_s"])
    record_property("replicas_restored_s", loss["replicas_restored_s"])
    print(f"\nworker node killed under {CLIENTS} clients: {loss['requests']} requests, "
          f"{len(loss['failed'])} failed {loss['failed']}, {loss['in_flight_at_kill']} in "
          f"flight at the kill; first success after the kill {loss['recovery_s']} s; "
          f"replacement node joined at {loss['replacement_joined_s']} s, lost replicas "
          f"running on it at {loss['replicas_restored_s']} s; longest gap between answers "
          f"{loss['longest_gap_between_answers_s']} s")
    assert loss["placement_before"]["Ingress"] == ["head", "worker1"]
    # What is lost: requests Serve's proxy sent to the worker's ingress replica between the
    # kill and its death (~0.5-1 s later: dropped connections), and the proxy's 500s as it
    # died. (A stage call from the head's ingress to the lost embedder is sent once more,
    # deployments/_client.py.) Ten runs, four with one core kept busy: 2-4 failed, every one
    # started within 1.2 s of the kill; a CI run before the resend: 5, the last at 1.87 s.
    assert len(loss["failed"]) <= 2 * CLIENTS, loss["failed"]
    for f in loss["failed"]:
        assert f["start_s"] < WINDOW_S, f  # after that, every request was answered
        # Each is one a client may retry: a dropped connection, a 503 with Retry-After, or
        # the 500 Serve's proxy answers when the replica actor dies under an accepted request
        # (ray 2.60 ray/serve/_private/http_util.py maps RayActorError to 500, as
        # test_ingress_replica_loss.py sees; RagServeClient retries it). ``answer`` (server
        # header, body) says who sent it.
        assert (isinstance(f["outcome"], str) or (f["outcome"] == 503 and f["retry_after"])
                or (f["outcome"] == 500 and f["end_s"] < WINDOW_S)), f
    assert loss["recovery_s"] is not None and loss["recovery_s"] < 30, loss
    assert loss["ok_after_kill"] > 20  # the head kept serving
    # Serve put the lost replicas back on the node that replaced the lost one.
    assert report["placement_after"]["Ingress"] == ["head", "worker2"], report["placement_after"]
    assert report["placement_after"]["Embedder"] == ["head", "worker2"]
