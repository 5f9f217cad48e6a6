"""What each Serve deployment asks Ray for (``ray_actor_options``: num_cpus, num_gpus, memory,
custom resources) fits a pod that the RayService can start — for every way to deploy k8s/ (as
it is, and with the gpu component on) — and the GPU worker group is there only when a
deployment asks for GPUs, so that it is reachable. What a pod offers Ray is what KubeRay makes
of its group's ``rayStartParams`` and Ray container (tests/k8s_tools.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from graphs.args import ActorOptions, RagAppArgs
from ragserve.stages import stages_for
from tests import k8s_tools as k8s

ROOT = k8s.ROOT
RENDER = ROOT / "scripts" / "render_k8s.py"
VENV_PY = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PY) if VENV_PY.exists() else sys.executable
GPU_CONFIG = ROOT / "configs" / "cluster-gpu.yaml"
GPU_COMPONENT = ROOT / "k8s" / "components" / "gpu"
GPU_STAGES = {"embedder", "reranker"}
VARIANTS = k8s.variants()


def _rayservice(variant: str) -> dict:
    (svc,) = [o for o in k8s.rendered(VARIANTS[variant]) if o["kind"] == "RayService"]
    return svc


def _deployments(svc: dict) -> dict[str, ActorOptions | None]:
    """``<app>.<stage>`` -> ray_actor_options, for every deployment of the embedded Serve config."""
    found = {}
    for app in yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"]:
        args = RagAppArgs.model_validate(app.get("args") or {})
        for name in [s.name for s in stages_for(args.mode)] + ["ingress"]:
            found[f"{app['name']}.{name}"] = getattr(args, name).deployment.ray_actor_options
    return found


def _max_replicas(svc: dict) -> list[dict[str, float]]:
    demands = []
    for app in yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"]:
        args = RagAppArgs.model_validate(app.get("args") or {})
        for name in [s.name for s in stages_for(args.mode)] + ["ingress"]:
            dep = getattr(args, name).deployment
            demands += [k8s.replica_demand(dep.ray_actor_options)] * dep.max_replicas()
    return demands


def _nodes(svc: dict, size: str) -> list[tuple[str, dict[str, float]]]:
    """Every pod of the cluster at its ``minReplicas`` or ``maxReplicas`` size (the head: one)."""
    nodes = []
    for name, group in k8s.ray_groups(svc).items():
        count = 1 if name == "head" else group.get(size, group.get("replicas", 1))
        nodes += [(name, k8s.ray_node_resources(group))] * count
    return nodes


# ---------------------------------------------------------------------- every deployment


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_deployment_fits_a_pod_of_some_group(variant):
    svc = _rayservice(variant)
    groups = {name: k8s.ray_node_resources(g) for name, g in k8s.ray_groups(svc).items()
              if name == "head" or g.get("maxReplicas", 1) > 0}
    deployments = _deployments(svc)
    assert deployments
    for where, opts in deployments.items():
        demand = k8s.replica_demand(opts)
        assert any(k8s.fits(demand, node) for node in groups.values()), (variant, where, demand, groups)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_replica_at_max_scale_packs_into_the_cluster_at_max_size(variant):
    svc = _rayservice(variant)
    placed = k8s.pack(_max_replicas(svc), _nodes(svc, "maxReplicas"))
    assert placed is not None, variant
    assert "head" not in placed  # the head keeps num-cpus 0: GCS, dashboard, controller only


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_gpu_group_is_reachable(variant):
    # Ray's autoscaler adds a GPU pod only for work that asks for a GPU: without such a
    # deployment a GPU group never starts, and with one there must be a GPU group to start
    svc = _rayservice(variant)
    gpu_groups = {name for name, g in k8s.ray_groups(svc).items() if k8s.ray_node_resources(g)["GPU"]}
    gpu_asks = {where for where, opts in _deployments(svc).items() if opts and opts.num_gpus}
    assert bool(gpu_groups) == bool(gpu_asks), (variant, gpu_groups, gpu_asks)


# --------------------------------------------------------------------- the gpu component


def test_the_gpu_component_puts_the_embedder_and_reranker_on_gpu_replicas():
    svc = _rayservice("gpu")
    assert yaml.safe_load(svc["spec"]["serveConfigV2"]) == yaml.safe_load(GPU_CONFIG.read_text())
    groups = k8s.ray_groups(svc)
    nodes = {name: k8s.ray_node_resources(g) for name, g in groups.items()}
    for where, opts in _deployments(svc).items():
        demand = k8s.replica_demand(opts)
        fitting = {name for name, node in nodes.items() if k8s.fits(demand, node)}
        if where.split(".")[-1] in GPU_STAGES:
            assert 0 < opts.num_gpus < 1 and fitting == {"gpu"}, (where, fitting)
        else:
            assert not demand.get("GPU") and "cpu" in fitting, (where, fitting)
    gpu = groups["gpu"]
    container = k8s.ray_container(gpu["template"]["spec"])
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    assert requests.get("nvidia.com/gpu") in (None, limits["nvidia.com/gpu"])  # extended: equal
    assert container["image"].endswith("-cuda")
    assert any(t.get("key") == "nvidia.com/gpu" for t in gpu["template"]["spec"].get("tolerations", []))
    assert gpu["minReplicas"] == 0 <= gpu.get("replicas", 0) <= gpu["maxReplicas"]
    # the other groups are k8s/'s own
    base = k8s.ray_groups(_rayservice("default"))
    assert {n: g for n, g in groups.items() if n != "gpu"} == base


def test_the_gpu_serve_config_is_rendered_into_the_component():
    target = GPU_COMPONENT / "rayservice-serve-config.yaml"
    r = subprocess.run([PYTHON, str(RENDER), "--source", str(GPU_CONFIG), "--target", str(target),
                        "--check"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_the_gpu_config_is_the_cluster_config_but_for_the_gpu_stages():
    cpu = yaml.safe_load((ROOT / "configs" / "cluster.yaml").read_text())
    gpu = yaml.safe_load(GPU_CONFIG.read_text())
    for doc in (cpu, gpu):
        for app in doc["applications"]:
            for stage in GPU_STAGES:
                app["args"].pop(stage)
    assert cpu == gpu


# ------------------------------------------------------------------ what a pod offers Ray


def _group(resources: dict, params: dict | None = None) -> dict:
    return {"rayStartParams": params or {},
            "template": {"spec": {"containers": [{"name": "ray", "resources": resources}]}}}


def test_pod_resources_follow_kuberays_rules():
    node = k8s.ray_node_resources(_group({"limits": {"cpu": "1500m", "memory": "4Gi",
                                                     "nvidia.com/gpu": 2}}))
    assert node == {"CPU": 2.0, "GPU": 2.0, "memory": 4 * 2**30}  # fractional CPUs round up
    assert k8s.ray_node_resources(_group({"requests": {"cpu": "3"}}))["CPU"] == 3.0
    custom = k8s.ray_node_resources(_group({"limits": {"cpu": "8"}},
                                           {"num-cpus": "0", "resources": '"{\\"TPU\\": 4}"'}))
    assert custom["CPU"] == 0.0 and custom["TPU"] == 4.0


def test_a_deployment_that_fits_no_group_is_caught():
    svc = _rayservice("default")
    nodes = [k8s.ray_node_resources(g) for g in k8s.ray_groups(svc).values()]
    for opts in (ActorOptions(num_cpus=1, num_gpus=1),           # no GPU group without the component
                 ActorOptions(num_cpus=9),                       # more than a pod's 8 CPUs
                 ActorOptions(num_cpus=1, memory=64 * 2**30),    # more than a pod's memory
                 ActorOptions(num_cpus=1, resources={"TPU": 1})):  # a resource nobody offers
        assert not any(k8s.fits(k8s.replica_demand(opts), n) for n in nodes), opts
    assert any(k8s.fits(k8s.replica_demand(ActorOptions(num_cpus=8)), n) for n in nodes)
    assert k8s.replica_demand(None) == {"CPU": 1.0}  # Serve's default: one CPU per replica
    too_many = [k8s.replica_demand(ActorOptions(num_cpus=2))] * 17  # 34 CPUs > 4 pods × 8
    assert k8s.pack(too_many, _nodes(svc, "maxReplicas")) is None
