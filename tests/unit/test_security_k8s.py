"""The Kubernetes manifests give the ingress the secrets its Serve config reads, for every way
to deploy k8s/ (as it is, and with each component on): each one comes from a Secret — a file of
a Secret volume mounted read-only in every worker pod, or a variable filled by ``secretKeyRef`` —
never from a value in a manifest or a config; Redis requires the password the ingress reads,
from the same Secret; no Secret object ships with a value in it; and each Secret the pods need
is one k8s/README.md says how to create."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from graphs.args import RagAppArgs
from ragserve.security.config import SecretRef
from tests import k8s_tools as k8s

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = k8s.variants()


# ------------------------------------------------------- every variant, every secret in it


def _secrets_in(node: Any, path: str = "args") -> Iterator[tuple[str, Any]]:
    """(path, value) for every SecretRef and SecretStr in a validated args model."""
    if isinstance(node, (SecretRef, SecretStr)):
        yield path, node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from _secrets_in(getattr(node, name), f"{path}.{name}")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _secrets_in(v, f"{path}[{i}]")
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _secrets_in(v, f"{path}.{k}")


def _rendered(variant: str) -> list[dict]:
    return k8s.rendered(VARIANTS[variant])


def _rayservice(objs: list[dict]) -> dict:
    (svc,) = [o for o in objs if o["kind"] == "RayService"]
    return svc


def _apps(svc: dict) -> list[tuple[str, RagAppArgs]]:
    return [(a["name"], RagAppArgs.model_validate(a.get("args") or {}))
            for a in yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"]]


def _secret_volumes(pod: dict) -> dict[str, str]:
    return {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}


def _where_mounted(pod: dict, container: dict, file: str) -> tuple[str, str] | None:
    """(Secret name, key) whose mounted file ``file`` is, or None."""
    secrets = _secret_volumes(pod)
    for m in container.get("volumeMounts", []):
        root = PurePosixPath(m["mountPath"])
        path = PurePosixPath(file)
        if m["name"] in secrets and m.get("readOnly") and path.parent == root:
            return secrets[m["name"]], path.name  # a whole Secret mounted: one file per key
    return None


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_secret_of_the_serve_config_comes_from_a_secret(variant):
    svc = _rayservice(_rendered(variant))
    workers = svc["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    checked = 0
    for app, args in _apps(svc):
        for where, secret in _secrets_in(args):
            if isinstance(secret, SecretStr):
                # a SecretStr holds its value in the config, readable by anyone who can read
                # the RayService: unset (redis_url may be set, without a password in it)
                if where.endswith(".redis_url"):
                    assert urlsplit(secret.get_secret_value()).password is None, (variant, where)
                else:
                    pytest.fail(f"{variant}: {app} {where} is a literal secret in serveConfigV2")
                continue
            assert secret.value is None, (variant, app, where)  # {value: ...}: tests only
            for group in workers:  # any worker may run an ingress replica
                pod = group["template"]["spec"]
                container = k8s.ray_container(pod)
                if secret.file:
                    assert _where_mounted(pod, container, secret.file), (variant, group["groupName"], where)
                else:
                    env = {e["name"]: e for e in container.get("env", [])}
                    assert "secretKeyRef" in env.get(secret.env, {}).get("valueFrom", {}), (
                        variant, group["groupName"], where, secret.env)
            checked += 1
    assert checked >= 2, "the admin key and the Redis password at least"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_redis_and_the_ingress_share_one_password_secret(variant):
    objs = _rendered(variant)
    (redis,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "redis"]
    container = redis["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    ref = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert "value" not in env["REDIS_PASSWORD"]
    assert container["args"][container["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    svc = _rayservice(objs)
    for _, args in _apps(svc):
        password = args.ingress.config.cache.redis_password
        assert password is not None and password.file, "the ingress authenticates to Redis"
        for group in svc["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
            pod = group["template"]["spec"]
            mounted = _where_mounted(pod, k8s.ray_container(pod), password.file)
            assert mounted == (ref["name"], ref["key"]), (variant, group["groupName"], mounted)


def _secret_names(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("secretName"), str):
            yield node["secretName"]
        if isinstance(node.get("secretKeyRef"), dict):
            yield node["secretKeyRef"]["name"]
        for v in node.values():
            yield from _secret_names(v)
    elif isinstance(node, list):
        for v in node:
            yield from _secret_names(v)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_secret_value_ships_and_every_needed_secret_is_documented(variant):
    objs = _rendered(variant)
    files = [d for p in k8s.manifest_files() for d in k8s.load_docs(p)]
    for obj in [*objs, *files]:
        # Secrets are created beside the manifests (kubectl create secret), never kept in them
        assert obj.get("kind") != "Secret", obj["metadata"]["name"]
    needed = {name for o in objs for name in _secret_names(o)}
    assert {"ragserve-keys", "redis-auth"} <= needed
    readme = (ROOT / "k8s" / "README.md").read_text()
    for name in needed:
        assert re.search(rf"kubectl create secret generic {re.escape(name)}\b", readme), name
