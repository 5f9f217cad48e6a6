"""The cluster config and the KubeRay manifests: they parse, agree with each other and with the
args model, fit the worker pods they are given, and hold no secrets. No cluster needed."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest
import uvicorn
import yaml
from fastapi.testclient import TestClient

from graphs.serve_env import serve_env

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

from graphs.args import RagAppArgs
from ragserve.edge.app import create_app
from tests import k8s_tools

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "configs" / "cluster.yaml"
K8S = ROOT / "k8s"
RENDER = ROOT / "scripts" / "render_k8s.py"
VENV_PY = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PY) if VENV_PY.exists() else sys.executable

SECRET_KEYS = {"api_key", "apikey", "password", "token", "secret"}


def _docs(name: str | Path) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _manifests() -> list[Path]:
    """Every file of whole objects in k8s/, at any depth (tests/k8s_tools.py)."""
    return k8s_tools.manifest_files()


def _cluster_config() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def _rayservice() -> dict:
    (svc,) = [d for d in _docs("rayservice.yaml") if d["kind"] == "RayService"]
    return svc


def _apps() -> list[tuple[str, RagAppArgs]]:
    return [(a["name"], RagAppArgs.model_validate(a["args"])) for a in _cluster_config()["applications"]]


def _stages(args: RagAppArgs) -> dict[str, Any]:
    return {"embedder": args.embedder, "retriever": args.retriever, "reranker": args.reranker,
            "generator": args.generator, "ingress": args.ingress}


def _pod_specs(svc: dict) -> Iterator[tuple[str, dict, dict]]:
    """(group name, group spec, pod spec) for the head and every worker group."""
    cluster = svc["spec"]["rayClusterConfig"]
    yield "head", cluster["headGroupSpec"], cluster["headGroupSpec"]["template"]["spec"]
    for group in cluster["workerGroupSpecs"]:
        yield group["groupName"], group, group["template"]["spec"]


def _cpus(quantity: str | int | float) -> float:
    q = str(quantity)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


# --------------------------------------------------------------------- configs/cluster.yaml


def test_cluster_config_is_a_valid_serve_config():
    from ray.serve.schema import ServeDeploySchema  # Ray's own schema of `serve deploy` files

    doc = _cluster_config()
    schema = ServeDeploySchema.model_validate(doc)
    assert schema.http_options.host == "0.0.0.0" and schema.http_options.port == 8000
    assert schema.http_options.request_timeout_s
    assert doc["logging_config"] == {"encoding": "JSON", "log_level": "INFO", "enable_access_log": True}
    (app,) = doc["applications"]
    assert app["name"] == "ragserve" and app["route_prefix"] == "/"
    assert app["import_path"] == "graphs.rag:build_app"


def test_every_application_validates_against_the_args_model():
    for name, args in _apps():
        assert not args.retriever.config.local, name  # a Qdrant server, so the retriever scales
        assert args.retriever.config.url == "http://qdrant:6333"
        assert args.generator.config.backend.backend == "openai"
        assert args.generator.config.backend.base_url == "http://vllm:8000/v1"
        assert args.embedder.deployment.ray_actor_options.num_cpus == 2


def test_batched_stages_admit_a_full_batch():
    # max_ongoing_requests caps what a @serve.batch can ever see (RAY_NOTES.md)
    for name, args in _apps():
        for stage in (args.embedder, args.reranker):
            assert stage.deployment.max_ongoing_requests is not None, name
            assert stage.deployment.max_ongoing_requests >= stage.config.batching.max_batch_size, name


@pytest.mark.parametrize("stage,lo,hi", [
    ("embedder", 1, 4), ("retriever", 1, 4), ("reranker", 1, 4), ("generator", 1, 4), ("ingress", 2, 8),
])
def test_every_stage_autoscales_and_can_actually_scale(stage, lo, hi):
    for name, args in _apps():
        dep = _stages(args)[stage].deployment
        auto = dep.autoscaling_config
        assert auto is not None and dep.num_replicas is None, (name, stage)
        assert (auto.min_replicas, auto.max_replicas) == (lo, hi), (name, stage)
        # a target at or above max_ongoing_requests is never exceeded, so it would never scale
        assert dep.max_ongoing_requests and auto.target_ongoing_requests < dep.max_ongoing_requests


def test_generator_replicas_outlive_their_llm_calls_on_shutdown():
    for _, args in _apps():
        dep, backend = args.generator.deployment, args.generator.config.backend
        assert dep.graceful_shutdown_timeout_s and dep.graceful_shutdown_timeout_s > backend.timeout_s


# ------------------------------------------------------------------------ fit on the workers


def _fits(demands: list[float], bins: int, size: float) -> bool:
    """First-fit decreasing: do these replica CPU demands pack into `bins` pods of `size` CPUs?"""
    free = [size] * bins
    for d in sorted(demands, reverse=True):
        for i, f in enumerate(free):
            if d <= f + 1e-9:
                free[i] -= d
                break
        else:
            return False
    return True


def test_replicas_fit_the_cpu_worker_group_at_min_and_max_scale():
    svc = _rayservice()
    head = svc["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # nothing is placed on the head
    (cpu,) = [g for g in svc["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "cpu"]
    (container,) = cpu["template"]["spec"]["containers"]
    pod_cpus = _cpus(container["resources"]["limits"]["cpu"])  # KubeRay's num-cpus for the pod
    for name, args in _apps():
        at_min: list[float] = []
        at_max: list[float] = []
        for stage in _stages(args).values():
            opts = stage.deployment.ray_actor_options
            need = opts.num_cpus if opts and opts.num_cpus is not None else 1.0  # Serve's default
            assert not (opts and opts.num_gpus), "GPU replicas belong on the gpu group"
            auto = stage.deployment.autoscaling_config
            at_min += [need] * (auto.min_replicas if auto else stage.deployment.num_replicas or 1)
            at_max += [need] * stage.deployment.max_replicas()
        assert _fits(at_min, cpu["minReplicas"], pod_cpus), (name, sum(at_min))
        assert _fits(at_max, cpu["maxReplicas"], pod_cpus), (name, sum(at_max))


# ------------------------------------------------------------------------------- RayService


def test_rayservice_embeds_the_cluster_config():
    svc = _rayservice()
    assert svc["apiVersion"] == "ray.io/v1"
    assert yaml.safe_load(svc["spec"]["serveConfigV2"]) == _cluster_config()
    assert re.search(r"^  serveConfigV2: \|$", (K8S / "rayservice.yaml").read_text(), re.M)


def test_render_script_reports_in_sync():
    r = subprocess.run([PYTHON, str(RENDER), "--check"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_render_script_detects_and_repairs_drift(tmp_path):
    source, target = tmp_path / "cluster.yaml", tmp_path / "rayservice.yaml"
    shutil.copy(CLUSTER, source)
    shutil.copy(K8S / "rayservice.yaml", target)
    source.write_text(source.read_text().replace("max_replicas: 8", "max_replicas: 6"))
    cmd = [PYTHON, str(RENDER), "--source", str(source), "--target", str(target)]

    r = subprocess.run([*cmd, "--check"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "out of sync" in r.stderr
    assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    assert subprocess.run([*cmd, "--check"], capture_output=True, timeout=60).returncode == 0

    before, after = _rayservice(), yaml.safe_load(target.read_text())
    assert yaml.safe_load(after["spec"].pop("serveConfigV2")) == yaml.safe_load(source.read_text())
    before["spec"].pop("serveConfigV2")
    assert after == before  # everything outside the block is untouched


def test_rayservice_cluster_shape():
    svc = _rayservice()
    spec = svc["spec"]
    # deprecated since KubeRay v1.1 (ignored); upgrades are governed by upgradeStrategy
    assert not {"serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold"} & set(spec)
    assert spec["upgradeStrategy"]["type"] in {"NewCluster", "None"}
    cluster = spec["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == "2.60.0"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert (groups["cpu"]["minReplicas"], groups["cpu"]["maxReplicas"]) == (1, 4)
    # GPU workers come with the gpu component, whose Serve config asks for GPUs
    # (test_k8s_resources.py); here no deployment would ever use them
    assert set(groups) == {"cpu"}
    for g in groups.values():
        assert g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"]


def test_ray_pods_are_hardened_and_left_to_kuberays_probes():
    for group, _, pod in _pod_specs(_rayservice()):
        assert pod["securityContext"]["runAsNonRoot"] is True, group
        assert pod["securityContext"].get("runAsUser", 1000) != 0, group
        (container,) = pod["containers"]
        assert container["image"].startswith("ragserve:0.1.0"), group
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["RAY_USAGE_STATS_ENABLED"] == "0", group
        # Serve's process-wide settings come from the one definition every launcher uses
        assert serve_env(local=False, mode="throughput").items() <= env.items(), group
        res = container["resources"]
        assert res["requests"] and res["limits"], group
        assert _cpus(res["requests"]["cpu"]) <= _cpus(res["limits"]["cpu"]), group
        # KubeRay adds Ray's and the Serve proxy's probes itself when none are set
        assert "readinessProbe" not in container and "livenessProbe" not in container, group
        command = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
        assert "sleep" in command and "ray stop" in command, group
        sleep_s = int(re.search(r"sleep (\d+)", command)[1])
        assert pod.get("terminationGracePeriodSeconds", 30) > sleep_s, group


# ----------------------------------------------------------------------- Redis and Qdrant


def test_redis_is_a_cache_without_persistence():
    docs = {d["kind"]: d for d in _docs("redis.yaml")}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("redis:7")
    args = container["args"]
    flags = {args[i]: args[i + 1] for i in range(0, len(args) - 1) if args[i].startswith("--")}
    assert flags["--maxmemory-policy"] == "allkeys-lru" and flags["--maxmemory"]
    assert flags["--save"] == "" and flags["--appendonly"] == "no"
    assert "volumeMounts" not in container and "volumeClaimTemplates" not in docs["Deployment"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert [p["port"] for p in docs["Service"]["spec"]["ports"]] == [6379]


def test_qdrant_keeps_its_index_on_a_volume():
    docs = _docs("qdrant.yaml")
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/qdrant/storage"
    assert services[sts["spec"]["serviceName"]]["spec"].get("clusterIP") == "None"
    # the name and port the retriever is configured with
    assert {p["port"] for p in services["qdrant"]["spec"]["ports"]} == {6333, 6334}
    assert sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


# ------------------------------------------------------------------------- every manifest


def test_every_manifest_parses_and_services_select_pods():
    pod_labels: list[dict] = []
    services: list[tuple[str, dict]] = []
    for path in _manifests():
        for doc in _docs(path):
            assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), path.name
            if doc["kind"] in {"Deployment", "StatefulSet"}:
                labels = doc["spec"]["template"]["metadata"]["labels"]
                assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items(), path.name
                pod_labels.append(labels)
            elif doc["kind"] == "Service":
                services.append((doc["metadata"]["name"], doc["spec"]["selector"]))
    for name, selector in services:
        assert any(selector.items() <= labels.items() for labels in pod_labels), name


def test_kustomization_lists_every_manifest():
    # every top-level file of long-running objects; a file of one-off jobs (a RayJob that
    # indexes a corpus) is applied on its own, when wanted
    (kust,) = _docs("kustomization.yaml")
    top = [p for p in _manifests() if p.parent == K8S]
    jobs = {p.name for p in top if {d["kind"] for d in _docs(p)} <= {"Job", "RayJob"}}
    assert sorted(kust["resources"]) == sorted(p.name for p in top if p.name not in jobs)
    components = [p.parent.name for p in (K8S / "components").glob("*/kustomization.yaml")]
    assert "gpu" in components and "components" not in kust  # off by default: k8s/README.md


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield f"{path}.{k}", k, v
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def test_no_literal_secrets():
    docs: list[tuple[str, Any]] = [
        (name, yaml.safe_load((ROOT / "configs" / name).read_text()))
        for name in ("cluster.yaml", "cluster-gpu.yaml")]
    # whole objects at any depth of k8s/, and the patches of its components
    for path in [*_manifests(), *sorted(k8s_tools.patch_files())]:
        for doc in _docs(path):
            docs.append((path.name, doc))
            if isinstance(doc, dict) and doc.get("kind") == "RayService":
                docs.append((f"{path.name} serveConfigV2", yaml.safe_load(doc["spec"]["serveConfigV2"])))
    for name, doc in docs:
        for where, key, value in _walk(doc):
            # (a volume's `secret: {secretName: ...}` is a reference to a Secret, not a value)
            if str(key).lower() in SECRET_KEYS and not (isinstance(value, dict)
                                                        and "secretName" in value):
                assert value in (None, ""), f"{name}: {where}"
            # an env var that looks secret must come from a Secret (valueFrom), not a literal
            if key == "env" and isinstance(value, list):
                for var in value:
                    if re.search(r"KEY|PASSWORD|TOKEN|SECRET", var["name"], re.I):
                        assert "value" not in var, f"{name}: {where} {var['name']}"


# --------------------------------------------------------------------------------- image


def _dockerfile() -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_builds_a_venv_with_pinned_torch_first_and_runs_as_non_root():
    lines = _dockerfile()
    froms = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert len(froms) >= 2  # multi-stage
    # the runtime stage runs the venv on the same base interpreter it was built with
    assert lines[froms[0]].split()[1] == lines[froms[-1]].split()[1]
    runs = [line for line in lines if line.upper().startswith("RUN ")]
    torch = next(i for i, r in enumerate(runs) if "torch==2.13.0" in r)
    project = next(i for i, r in enumerate(runs) if re.search(r"pip install .* \.( |$)", r))
    assert torch < project
    assert "download.pytorch.org/whl/cpu" in (ROOT / "Dockerfile").read_text()
    bundled_run = next(r for r in runs if "--no-deps" in r)  # the `bundled` extra, no deps
    if tomllib is not None:
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        bundled_names = [re.split(r"[=<>!~ ]", req)[0] for req in extras["bundled"]]
        assert all(n in bundled_run for n in bundled_names), bundled_names
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    assert users and users[-1] not in {"0", "root"}


def _healthcheck() -> tuple[list[str], str]:
    """The runtime stage's HEALTHCHECK: its exec-form command and the URL it probes."""
    lines = _dockerfile()
    checks = [i for i, line in enumerate(lines) if line.upper().startswith("HEALTHCHECK ")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    assert len(checks) == 1 and checks[0] > last_from  # one, in the image that ships
    options, _, command = lines[checks[0]].partition(" CMD ")
    assert "--start-period=" in options and "--timeout=" in options
    argv = json.loads(command)  # exec form: no shell needed in the image
    (url,) = re.findall(r"https?://[^'\"\s]+", " ".join(argv))
    return argv, url


def test_dockerfile_healthcheck_probes_the_liveness_route_with_what_the_image_has():
    argv, url = _healthcheck()
    text = (ROOT / "Dockerfile").read_text()
    # the venv's interpreter, copied into the runtime stage; curl is not in the slim image
    assert argv[0] == "/opt/venv/bin/python" and "COPY --from=build /opt/venv /opt/venv" in text
    assert "curl" not in " ".join(argv)
    parsed = urlsplit(url)
    assert parsed.hostname == "127.0.0.1"
    exposed = {int(p) for line in _dockerfile() if line.upper().startswith("EXPOSE ")
               for p in line.split()[1:]}
    assert parsed.port in exposed and parsed.port == _cluster_config()["http_options"]["port"]
    # a real GET route of the API, open without a key, and the liveness one: /readyz answers
    # 503 while a stage loads, which is no reason to call the container unhealthy
    app = create_app(lambda: None)
    assert any(getattr(r, "path", None) == parsed.path and "GET" in r.methods for r in app.routes)
    assert parsed.path == "/healthz"
    assert TestClient(app).get(parsed.path).status_code == 200


def test_dockerfile_healthcheck_command_tells_up_from_down():
    argv, url = _healthcheck()
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(lambda: None), host="127.0.0.1", port=port,
                                           log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started

        def probe(target: str) -> int:
            code = argv[-1].replace(url, target)
            return subprocess.run([sys.executable, *argv[1:-1], code], capture_output=True,
                                  timeout=30).returncode

        parsed = urlsplit(url)
        assert probe(f"http://127.0.0.1:{port}{parsed.path}") == 0
        assert probe(f"http://127.0.0.1:{port}/no-such-route") != 0
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert probe(f"http://127.0.0.1:{port}{parsed.path}") != 0  # nothing listening


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", ".ragserve", ".pytest_cache"} <= ignored
