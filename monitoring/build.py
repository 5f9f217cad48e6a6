"""Writes the monitoring files from one definition: the Grafana dashboard
(``monitoring/grafana/ragserve.json``), the Prometheus rule file
(``monitoring/prometheus/ragserve-rules.yaml``) and the Kubernetes manifests
(``k8s/monitoring.yaml``: a PodMonitor for the Ray head and workers, the PrometheusRule and the
dashboard as a ConfigMap for Grafana's sidecar).

    .venv/bin/python -m monitoring.build          # rewrite them
    .venv/bin/python -m monitoring.build --check  # fail if they are stale (the tests do this)

Series names are as Ray's metrics agent exports them: ``ray_`` + the name in
``ragserve/observability/metrics.py`` (counters keep their ``_total``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "monitoring/grafana/ragserve.json"
RULES = ROOT / "monitoring/prometheus/ragserve-rules.yaml"
K8S = ROOT / "k8s/monitoring.yaml"
W = "5m"


def ratio(num: str, den: str) -> str:
    return f"({num}) / clamp_min({den}, 1e-9)"


def quantiles(metric: str, by: str, qs=(0.5, 0.95, 0.99)) -> list[tuple[str, str]]:
    return [(f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[{W}])))",
             f"p{int(q * 100)} {{{{{by}}}}}") for q in qs]


REQ = "ray_ragserve_requests_total"
STAGE = "ray_ragserve_stage_duration_seconds"
CACHE = "ray_ragserve_cache_requests_total"

# (title, unit, [(expr, legend)], core: has data whenever the service has served traffic,
#  thresholds)
PANELS: list[dict] = [
    dict(title="Requests per second by route and status", unit="reqps", core=True,
         targets=[(f"sum by (route, status) (rate({REQ}[{W}]))", "{{route}} {{status}}")]),
    dict(title="Error ratio (5xx)", unit="percentunit", core=True, thresholds=[0.01],
         targets=[(ratio(f'sum(rate({REQ}{{status=~"5.."}}[{W}])) or vector(0)',
                         f"sum(rate({REQ}[{W}]))"), "5xx / all")]),
    dict(title="Errors by type and code", unit="reqps",
         targets=[(f"sum by (type, code) (rate(ray_ragserve_errors_total[{W}]))",
                   "{{type}} {{code}}")]),
    dict(title="End-to-end latency by route (p50/p95/p99)", unit="s", core=True,
         targets=quantiles("ray_ragserve_request_duration_seconds", "route")),
    dict(title="Retrieval latency (p50/p95/p99) — target p95 < 500 ms", unit="s", core=True,
         thresholds=[0.5],
         targets=[(f'histogram_quantile({q}, sum by (le) (rate({STAGE}_bucket{{stage="retrieve"}}[{W}])))',
                   f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)]),
    dict(title="Generation latency (p50/p95/p99) — target p95 < 2 s", unit="s", thresholds=[2.0],
         targets=[(f'histogram_quantile({q}, sum by (le) (rate({STAGE}_bucket{{stage="generate"}}[{W}])))',
                   f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)]),
    dict(title="Latency per stage (p95)", unit="s", core=True,
         targets=[(f"histogram_quantile(0.95, sum by (le, stage) (rate({STAGE}_bucket[{W}])))",
                   "{{stage}}")]),
    dict(title="Time to first token (p50/p95)", unit="s",
         targets=[(f"histogram_quantile({q}, sum by (le) (rate(ray_ragserve_time_to_first_token_seconds_bucket[{W}])))",
                   f"p{int(q * 100)}") for q in (0.5, 0.95)]),
    dict(title="Tokens per second by model", unit="short",
         targets=[(f"sum by (direction, backend, model) (rate(ray_ragserve_tokens_total[{W}]))",
                   "{{direction}} {{backend}}/{{model}}")]),
    dict(title="Estimated generation spend per hour", unit="currencyUSD",
         targets=[("sum by (model, currency) (increase(ray_ragserve_generation_cost_total[1h]))",
                   "{{model}} ({{currency}})")]),
    dict(title="Cache hit ratio by tier", unit="percentunit", core=True,
         targets=[(ratio(f'sum by (tier) (rate({CACHE}{{result="hit"}}[{W}]))',
                         f"sum by (tier) (rate({CACHE}[{W}]))"), "{{tier}}")]),
    dict(title="De-duplicated waiters per second", unit="reqps",
         targets=[(f'sum(rate({CACHE}{{result="deduplicated"}}[{W}]))', "deduplicated")]),
    dict(title="Degraded answers by reason", unit="reqps",
         targets=[(f"sum by (reason) (rate(ray_ragserve_degraded_total[{W}]))", "{{reason}}")]),
    dict(title="Generator attempts, retries and fallbacks", unit="reqps",
         targets=[(f"sum by (backend, outcome) (rate(ray_ragserve_generation_attempts_total[{W}]))",
                   "attempt {{backend}} {{outcome}}"),
                  (f"sum by (backend) (rate(ray_ragserve_generation_retries_total[{W}]))",
                   "retry {{backend}}"),
                  (f"sum by (backend) (rate(ray_ragserve_generation_fallbacks_total[{W}]))",
                   "fallback answered by {{backend}}")]),
    dict(title="Circuit breakers (0 closed, 1 half-open, 2 open)", unit="short",
         targets=[("max by (backend) (ray_ragserve_breaker_state)", "{{backend}}")]),
    dict(title="Batch size per model call (p50/p95)", unit="short", core=True,
         targets=quantiles("ray_ragserve_batch_size", "stage", (0.5, 0.95))),
    dict(title="Candidates retrieved and passages returned (p50)", unit="short", core=True,
         targets=[(f"histogram_quantile(0.5, sum by (le) (rate(ray_ragserve_retrieval_candidates_bucket[{W}])))",
                   "candidates"),
                  (f"histogram_quantile(0.5, sum by (le, route) (rate(ray_ragserve_results_returned_bucket[{W}])))",
                   "returned {{route}}")]),
    dict(title="Answers with no passages", unit="reqps",
         targets=[(f"sum by (route) (rate(ray_ragserve_empty_results_total[{W}]))", "{{route}}")]),
    dict(title="Auth denied and rate limited", unit="reqps",
         targets=[(f"sum by (code) (rate(ray_ragserve_auth_denied_total[{W}]))", "denied {{code}}"),
                  (f"sum(rate(ray_ragserve_rate_limited_total[{W}]))", "rate limited")]),
    dict(title="Stage replica calls by outcome", unit="reqps", core=True,
         targets=[(f"sum by (stage, outcome) (rate(ray_ragserve_stage_calls_total[{W}]))",
                   "{{stage}} {{outcome}}")]),
    dict(title="Healthy replicas per deployment (Serve)", unit="short",
         targets=[("sum by (deployment) (ray_serve_deployment_replica_healthy)", "{{deployment}}")]),
    dict(title="Queued and ongoing requests per deployment (Serve)", unit="short",
         targets=[("sum by (deployment) (ray_serve_deployment_queued_queries)", "queued {{deployment}}"),
                  ("sum by (deployment) (ray_serve_replica_processing_queries)", "ongoing {{deployment}}")]),
]

ALERTS: list[dict] = [
    dict(alert="RagserveRetrievalLatencyHigh", for_="5m", severity="warning",
         expr=f'histogram_quantile(0.95, sum by (le) (rate({STAGE}_bucket{{stage="retrieve"}}[{W}]))) > 0.5',
         summary="Retrieval p95 is over 500 ms",
         description="p95 of the retrieve stage is {{ $value | humanizeDuration }} (target < 500 ms)."),
    dict(alert="RagserveGenerationLatencyHigh", for_="5m", severity="warning",
         expr=f'histogram_quantile(0.95, sum by (le) (rate({STAGE}_bucket{{stage="generate"}}[{W}]))) > 2',
         summary="Generation p95 is over 2 s",
         description="p95 of the generate stage is {{ $value | humanizeDuration }} (target < 2 s)."),
    dict(alert="RagserveErrorRatioHigh", for_="5m", severity="critical",
         expr=ratio(f'sum(rate({REQ}{{status=~"5.."}}[{W}])) or vector(0)',
                    f"sum(rate({REQ}[{W}]))") + " > 0.01",
         summary="More than 1 % of requests fail",
         description="{{ $value | humanizePercentage }} of requests answered 5xx over 5 minutes."),
    dict(alert="RagserveBreakerOpen", for_="1m", severity="warning",
         expr="max by (backend) (ray_ragserve_breaker_state) >= 2",
         summary="A generator backend's circuit breaker is open",
         description="Backend {{ $labels.backend }} is skipped; answers come from fallbacks."),
    dict(alert="RagserveCacheHitRatioCollapse", for_="10m", severity="warning",
         expr=("(" + ratio(f'sum(rate({CACHE}{{tier="query",result="hit"}}[10m]))',
                           f'sum(rate({CACHE}{{tier="query"}}[10m]))') + ")"
               " < 0.5 * (" + ratio(f'sum(rate({CACHE}{{tier="query",result="hit"}}[1h] offset 1h))',
                                    f'sum(rate({CACHE}{{tier="query"}}[1h] offset 1h))') + ")"),
         summary="Query cache hit ratio fell to under half of the previous hour's",
         description="The query cache hit ratio is {{ $value | humanizePercentage }}; check Redis "
                     "and recent ingests (each ingest invalidates cached answers)."),
    dict(alert="Ragserve429Surge", for_="5m", severity="warning",
         expr=ratio(f'sum(rate({REQ}{{status="429"}}[{W}]))', f"sum(rate({REQ}[{W}]))") + " > 0.05",
         summary="More than 5 % of requests are rate limited",
         description="{{ $value | humanizePercentage }} of requests answered 429 over 5 minutes."),
]


def dashboard() -> dict:
    panels = []
    for i, p in enumerate(PANELS):
        steps = [{"color": "green", "value": None}] + [
            {"color": "red", "value": t} for t in p.get("thresholds", [])]
        panels.append({
            "id": i + 1, "type": "timeseries", "title": p["title"],
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {
                "unit": p["unit"],
                "thresholds": {"mode": "absolute", "steps": steps},
                "custom": {"thresholdsStyle": {"mode": "line" if p.get("thresholds") else "off"}}},
                "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                        "tooltip": {"mode": "multi"}},
            "targets": [{"refId": chr(65 + j), "expr": e, "legendFormat": legend,
                         "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                        for j, (e, legend) in enumerate(p["targets"])],
            **({"description": "core panel: has data whenever the service serves traffic"}
               if p.get("core") else {}),
        })
    return {
        "uid": "ragserve-overview", "title": "ragserve — RAG on Ray Serve",
        "tags": ["ragserve", "ray-serve"], "timezone": "browser", "schemaVersion": 39,
        "version": 1, "editable": True, "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource",
                                 "query": "prometheus", "label": "Prometheus"}]},
        "annotations": {"list": []},
        "panels": panels,
    }


def rule_groups() -> dict:
    rules = []
    for a in ALERTS:
        rules.append({"alert": a["alert"], "expr": a["expr"], "for": a["for_"],
                      "labels": {"severity": a["severity"], "service": "ragserve"},
                      "annotations": {"summary": a["summary"], "description": a["description"],
                                      "dashboard": "ragserve-overview"}})
    return {"groups": [{"name": "ragserve", "interval": "30s", "rules": rules}]}


def k8s(dash: dict, groups: dict) -> list[dict]:
    labels = {"app.kubernetes.io/part-of": "ragserve", "release": "prometheus"}
    return [
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
         "metadata": {"name": "ragserve-ray", "labels": labels},
         "spec": {
             # KubeRay labels every pod of the RayService's clusters with ray.io/node-type
             # (head, worker) and exposes Ray's metrics agent as the container port "metrics".
             "selector": {"matchExpressions": [
                 {"key": "ray.io/node-type", "operator": "In", "values": ["head", "worker"]}],
                 "matchLabels": {"app.kubernetes.io/name": "kuberay"}},
             "podMetricsEndpoints": [{
                 "port": "metrics", "path": "/metrics", "interval": "15s",
                 "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_label_ray_io_node_type"],
                                  "targetLabel": "ray_node_type"}]}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
         "metadata": {"name": "ragserve", "labels": labels},
         "spec": groups},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "ragserve-grafana-dashboard",
                      "labels": {**labels, "grafana_dashboard": "1"}},
         "data": {"ragserve.json": json.dumps(dash, indent=1, sort_keys=True)}},
    ]


def render() -> dict[Path, str]:
    dash, groups = dashboard(), rule_groups()
    head = "# Generated by `python -m monitoring.build` from monitoring/build.py: edit that.\n"
    return {
        DASHBOARD: json.dumps(dash, indent=2, sort_keys=True) + "\n",
        RULES: head + yaml.safe_dump(groups, sort_keys=False, width=200),
        K8S: head + "# Apply after the Prometheus Operator: kubectl apply -f k8s/monitoring.yaml\n"
             + yaml.safe_dump_all(k8s(dash, groups), sort_keys=False, width=200),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = ap.parse_args(argv)
    stale = []
    for path, text in render().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale (run python -m monitoring.build):", *stale, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
