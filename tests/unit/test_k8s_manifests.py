"""The KubeRay manifests parse, embed configs/cluster.yaml verbatim, and hold no secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from graphs.args import RagAppArgs

ROOT = Path(__file__).resolve().parents[2]


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / "k8s" / name).read_text()) if d]


def test_rayservice_embeds_the_cluster_config():
    (svc,) = _docs("rayservice.yaml")
    assert svc["apiVersion"] == "ray.io/v1" and svc["kind"] == "RayService"
    embedded = yaml.safe_load(svc["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((ROOT / "configs" / "cluster.yaml").read_text())
    for app in embedded["applications"]:
        args = RagAppArgs.model_validate(app["args"])
        assert args.retriever.config.url  # a server, so the retriever may scale out
    head = svc["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"


def test_render_script_reports_in_sync():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "render_k8s.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_every_manifest_parses_and_names_its_kind():
    for path in (ROOT / "k8s").glob("*.yaml"):
        for doc in _docs(path.name):
            assert doc.get("kind"), path.name


def _walk(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
            yield f"{path}.{k}", k, v
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def test_no_literal_secrets():
    docs = [yaml.safe_load((ROOT / "configs" / "cluster.yaml").read_text())]
    for path in (ROOT / "k8s").glob("*.yaml"):
        docs += _docs(path.name)
    for doc in docs:
        for where, key, value in _walk(doc):
            if str(key).lower() in {"api_key", "password", "token", "secret"}:
                assert not value, where
