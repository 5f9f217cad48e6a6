"""A running graph seen from outside: metrics through a real Prometheus, one trace per
request through OTLP, log files that fill promptly and hold no request text.

The scenario (``observability_scenario.py``) runs in a process of its own: it needs a Ray
started with a metrics export port, which the session's shared Ray has not."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.graphs.observability_scenario import OPTIONAL_METRICS

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="prometheus is not installed (scripts/bootstrap.sh)")]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    work = tmp_path_factory.mktemp("observability")
    r = subprocess.run([sys.executable, "-m", "tests.graphs.observability_scenario", str(work)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_every_ragserve_metric_reaches_prometheus(report):
    assert not set(report["missing_metrics"]) - OPTIONAL_METRICS, report["ragserve_series"]


def test_ragserve_series_carry_the_replica_that_recorded_them(report):
    series = report["request_series_labels"]
    assert series, report["ragserve_series"]
    for labels in series:  # counters are summed in the replica and handed to Ray each second
        assert labels["deployment"] == "Ingress" and labels["application"] == "ragserve", labels
        assert labels["replica"] and labels["status"], labels


def test_every_dashboard_and_alert_expression_evaluates(report):
    bad = {e: r for e, r in report["expressions"].items() if r["status"] != "success"}
    assert not bad, bad
    empty_core = [r["title"] for r in report["expressions"].values()
                  if r["core"] and r["series"] == 0]
    assert not empty_core, empty_core
    assert report["rule_health"] and set(report["rule_health"].values()) <= {"ok", "unknown"}


def test_one_query_is_one_trace_across_every_stage_process(report):
    spans = report["spans"]
    root = next(s for s in spans if s["attributes"].get("ragserve.request_id", "").find(
        "trace-me-1") >= 0)
    trace = [s for s in spans if s["trace_id"] == root["trace_id"]]
    by_id = {s["span_id"]: s for s in trace}
    assert root["parent"] == "" and root["component"] == "ingress"
    for s in trace:  # one tree: every other span's parent is in the trace
        if s is not root:
            assert s["parent"] in by_id, s
    servers = {s["component"]: s for s in trace  # the stages' own spans, in their replicas
               if s["component"] != "ingress"
               and s["name"].split(".")[-1] in ("embed", "search", "rerank", "generate")}
    assert {"embedder", "retriever", "generator"} <= set(servers), sorted(
        s["name"] for s in trace)
    for comp, s in servers.items():  # a stage call is one span, in the replica, under the root
        assert s["parent"] == root["span_id"], (comp, by_id[s["parent"]]["name"])
        assert s["pid"] != root["pid"]
    assert not [s["name"] for s in trace if s["name"].startswith("call ")]
    # the root holds the stage timings as the pipeline saw them (transit = these - replica's)
    assert root["attributes"]["ragserve.retrieve_ms"] > 0
    assert root["attributes"]["ragserve.generate_ms"] > 0
    assert "ragserve.candidates" in servers["retriever"]["attributes"]
    assert "ragserve.backend" in servers["generator"]["attributes"]


def test_logs_reach_their_files_within_seconds_without_request_text(report):
    sizes = report["replica_logs"]
    assert sizes and all(size > 0 for size in sizes.values()), sizes
    assert report["json_log_records"] >= 40
    sample = report["json_log_sample"]
    assert sample["route"] == "/v1/query" and sample["status"] == 200
    assert len(sample["trace_id"]) == 32 and len(sample["query_hash"]) == 12
    assert not report["canary_in_logs"]
