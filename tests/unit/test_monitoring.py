"""The monitoring files: generated from one definition and up to date, the alert rules
checked and unit-tested by promtool, the Kubernetes manifests valid against the Prometheus
Operator's CRD schemas, and every ragserve metric on the dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from monitoring import build
from ragserve.observability.metrics import METRICS

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT.parent / "shared" / "k8s-crds"
PROMTOOL = shutil.which("promtool")


def test_generated_files_are_up_to_date():
    assert build.main(["--check"]) == 0, "run: .venv/bin/python -m monitoring.build"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (scripts/bootstrap.sh)")
def test_promtool_checks_and_unit_tests_the_rules():
    rules = ROOT / "monitoring/prometheus"
    for args in (["check", "rules", "ragserve-rules.yaml"],
                 ["test", "rules", "ragserve-rules.test.yaml"]):
        r = subprocess.run([PROMTOOL, *args], cwd=rules, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


def _crd_schema(kind: str) -> dict:
    for path in CRDS.glob("monitoring.coreos.com_*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            version = next(v for v in crd["spec"]["versions"] if v.get("served", True))
            return version["schema"]["openAPIV3Schema"]
    raise LookupError(kind)


@pytest.mark.skipif(not CRDS.is_dir(), reason="no CRD schemas in ../shared/k8s-crds")
def test_k8s_monitoring_manifests_match_the_operator_crds():
    docs = list(yaml.safe_load_all((ROOT / "k8s/monitoring.yaml").read_text()))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["PodMonitor", "PrometheusRule", "ConfigMap"]
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            schema = _crd_schema(doc["kind"])
            # OpenAPI v3 schemas (Go regexes, x-kubernetes-* keys): validate, do not lint
            jsonschema.Draft7Validator(schema).validate(doc)
            # the schema check catches unknown fields only where the CRD forbids them: look
            # at the spec's top-level names too
            assert set(doc["spec"]) <= set(schema["properties"]["spec"]["properties"])
    pod_monitor, rule, dashboard_cm = docs
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    rayservice = (ROOT / "k8s/rayservice.yaml").read_text()
    assert "name: metrics" in rayservice  # the port the PodMonitor scrapes
    assert rule["spec"] == yaml.safe_load(
        (ROOT / "monitoring/prometheus/ragserve-rules.yaml").read_text())
    assert dashboard_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard_cm["data"]["ragserve.json"]) == json.loads(
        (ROOT / "monitoring/grafana/ragserve.json").read_text())


def test_the_dashboard_is_importable_and_shows_every_ragserve_metric():
    dash = json.loads((ROOT / "monitoring/grafana/ragserve.json").read_text())
    assert dash["uid"] and dash["panels"] and dash["schemaVersion"] >= 30
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = set(re.findall(r"\b(ray_[a-z_]+?)(?:_bucket|_sum|_count)?\b", " ".join(exprs)))
    exported = {f"ray_{m.name}" for m in METRICS}
    missing = exported - used - {"ray_ragserve_tenant_requests_total"}  # off by default
    assert not missing, f"metrics without a panel: {sorted(missing)}"
    unknown = {u for u in used if u.startswith("ray_ragserve_")} - exported
    assert not unknown, f"panels reading metrics nobody records: {sorted(unknown)}"
    titles = " ".join(p["title"] for p in dash["panels"])
    for needed in ("Retrieval latency", "Generation latency", "Error ratio", "Tokens",
                   "Cache hit ratio", "Degraded", "fallbacks", "replicas", "Queued",
                   "Batch size"):
        assert needed in titles
