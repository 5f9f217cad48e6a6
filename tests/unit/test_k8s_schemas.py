"""Every object in k8s/ is one the API server accepts — each manifest file at any depth (a new
file is picked up by itself) and what kustomize renders for each way to deploy (k8s/ as it is,
and with each component on): built-in kinds against Kubernetes' own schemas (kubernetes-validate,
strict), KubeRay's and the Prometheus Operator's custom resources against their CRDs'
openAPIV3Schema (tests/k8s_tools.py says how the Kubernetes extensions are read). No cluster.

The CRDs are not part of the project: their folder is $RAGSERVE_K8S_CRDS, by default
../shared/k8s-crds beside the repository; without it the custom resources are skipped (with that
reason) and the built-in kinds are still checked."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests import k8s_tools as k8s

ROOT = k8s.ROOT
EXPECTED_CRDS = {("ray.io", "RayService"), ("ray.io", "RayCluster"), ("ray.io", "RayJob"),
                 ("monitoring.coreos.com", "ServiceMonitor"),
                 ("monitoring.coreos.com", "PodMonitor"),
                 ("monitoring.coreos.com", "PrometheusRule")}


def _no_crds() -> str:
    return (f"no CRD folder at {k8s.crds_dir()}: KubeRay's and the Prometheus Operator's CRDs are "
            f"not part of the project; point ${k8s.CRDS_ENV} at a folder holding them")


@pytest.fixture(scope="module")
def crds() -> Path | None:
    """The CRD folder, or None without one (then only built-in kinds can be checked)."""
    folder = k8s.crds_dir()
    return folder if folder.is_dir() else None


def _skip_custom_without_crds(obj: dict, crds: Path | None) -> None:
    if crds is None and k8s.is_custom(obj):
        pytest.skip(_no_crds())


def _objects() -> list[tuple[str, dict]]:
    found = []
    for path in k8s.manifest_files():
        for i, doc in enumerate(k8s.load_docs(path)):
            name = doc.get("metadata", {}).get("name") if isinstance(doc, dict) else None
            found.append((f"{path.relative_to(ROOT)}#{i}:{doc.get('kind')}/{name}", doc))
    return found


OBJECTS = _objects()
VARIANTS = k8s.variants()


def _key(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


# ----------------------------------------------------------------------------- the manifests


def test_the_crd_folder_defines_every_kind_the_manifests_may_use(crds):
    if crds is None:
        pytest.skip(_no_crds())
    assert EXPECTED_CRDS <= k8s.crd_kinds(crds)


def test_the_manifests_are_found_at_any_depth_without_patches_or_kustomizations():
    files = k8s.manifest_files()
    assert ROOT / "k8s" / "rayservice.yaml" in files
    assert not {p.name for p in files} & {"kustomization.yaml", "kustomization.yml"}
    assert not {p.resolve() for p in files} & k8s.patch_files()
    assert k8s.patch_files(), "the gpu component's patches are known as patches"


@pytest.mark.parametrize("where,obj", OBJECTS, ids=[w for w, _ in OBJECTS])
def test_every_manifest_object_validates(where, obj, crds):
    _skip_custom_without_crds(obj, crds)
    assert k8s.problems(obj, crds) == [], where


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_object_validates(variant, crds):
    objs = k8s.rendered(VARIANTS[variant])
    (base,) = k8s.load_docs(k8s.K8S / "kustomization.yaml")
    listed = {_key(d) for entry in base["resources"] for d in k8s.load_docs(k8s.K8S / entry)}
    assert listed == {_key(o) for o in objs}, variant  # components patch, they add no object
    unchecked = sorted({o["kind"] for o in objs if crds is None and k8s.is_custom(o)})
    for obj in objs:
        if obj["kind"] not in unchecked:
            assert k8s.problems(obj, crds) == [], (variant, _key(obj))
    if unchecked:
        pytest.skip(f"built-in kinds pass; {', '.join(unchecked)} not checked: {_no_crds()}")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_fallback_renderer_agrees_with_kustomize(variant):
    # without kustomize/kubectl the overlays are rendered by tests/k8s_tools.py itself
    if k8s.kustomize_command() is None:
        pytest.skip("neither kustomize nor kubectl is installed: nothing to compare against")
    by_kustomize = sorted(k8s.render_variant(VARIANTS[variant]), key=_key)
    assert sorted(k8s.render_variant(VARIANTS[variant], simple=True), key=_key) == by_kustomize


# ------------------------------------------------------------------- the validator bites


def _leaves(node: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    if isinstance(node, dict):
        return [x for k, v in node.items() for x in _leaves(v, (*path, k))]
    if isinstance(node, list):
        return [x for i, v in enumerate(node) for x in _leaves(v, (*path, i))]
    return [(path, node)]


def _set(obj: dict, path: tuple, value: Any) -> None:
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


def _containers(node: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every container list in the object (pod templates, wherever they sit)."""
    if isinstance(node, dict):
        here = [(*path, "containers")] if isinstance(node.get("containers"), list) else []
        return here + [x for k, v in node.items() for x in _containers(v, (*path, k))]
    if isinstance(node, list):
        return [x for i, v in enumerate(node) for x in _containers(v, (*path, i))]
    return []


@pytest.mark.parametrize("where,obj", OBJECTS, ids=[w for w, _ in OBJECTS])
def test_a_broken_copy_of_every_object_fails(where, obj, crds):
    _skip_custom_without_crds(obj, crds)
    # a wrong type: the first scalar past apiVersion/kind/metadata becomes a mapping
    path, _ = next((p, v) for p, v in _leaves(obj) if p[0] not in {"apiVersion", "kind", "metadata"})
    broken = copy.deepcopy(obj)
    _set(broken, path, {"wrong": "type"})
    assert any("/".join(map(str, path)) in p for p in k8s.problems(broken, crds)), (where, path)
    # an unknown field at the top and in every container
    broken = copy.deepcopy(obj)
    broken["spce"] = {}
    assert any("'spce' was unexpected" in p for p in k8s.problems(broken, crds)), where
    for containers in _containers(obj):
        broken = copy.deepcopy(obj)
        target = broken
        for p in containers:
            target = target[p]
        target[0]["imagee"] = "typo:1"
        assert any("'imagee' was unexpected" in p for p in k8s.problems(broken, crds)), (where, containers)


def test_a_broken_copy_of_the_rayservice_file_fails(crds, tmp_path):
    if crds is None:
        pytest.skip(_no_crds())
    text = (ROOT / "k8s" / "rayservice.yaml").read_text()
    broken = tmp_path / "rayservice.yaml"
    broken.write_text(text.replace("maxReplicas: 4", "maxReplicas: four", 1)
                      .replace("enableInTreeAutoscaling:", "enableInTreeAutoscalling:", 1)
                      .replace("  upgradeStrategy:", "  managedBy: me\n  upgradeStrategy:", 1))
    (svc,) = [d for d in k8s.load_docs(broken) if d["kind"] == "RayService"]
    found = "\n".join(k8s.problems(svc, crds))
    assert "'four' is not of type 'integer'" in found
    assert "'enableInTreeAutoscalling' was unexpected" in found
    assert "managedBy field value must be either" in found  # a CEL rule of the CRD
    assert k8s.problems({**svc, "kind": "RayServe"}, crds) == [
        f"no CRD for ray.io RayServe in {crds}"]


def test_builtin_kinds_are_checked_strictly_against_the_pinned_kubernetes():
    (deployment,) = [o for _, o in OBJECTS if o["kind"] == "Deployment"][:1]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = [1]
    assert k8s.problems(broken)
    broken = copy.deepcopy(deployment)
    broken["spec"]["replicas"] = "1"
    assert k8s.problems(broken) == ["spec/replicas: '1' is not of type 'integer', 'null'"]
    unknown = {"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert k8s.problems(unknown) and "no CRD" in k8s.problems(unknown)[0]
    made_up = {"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert "Couldn't find schema" in k8s.problems(made_up)[0]


# ------------------------------------------------ how the Kubernetes extensions are read


def _validator(schema: dict):
    return k8s._CrdValidator(k8s.to_jsonschema(schema), format_checker=k8s._FORMATS)


def _ok(schema: dict, value: Any) -> bool:
    return not list(_validator(schema).iter_errors(value))


def test_int_or_string_takes_integers_and_strings_only():
    schema = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}],
              "pattern": "^[0-9]+m?$"}
    assert _ok(schema, 1) and _ok(schema, "500m")
    assert not _ok(schema, 1.5) and not _ok(schema, {}) and not _ok(schema, "lots")


def test_objects_reject_unknown_fields_unless_they_preserve_them():
    closed = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert _ok(closed, {"a": "x"}) and not _ok(closed, {"b": 1})
    kept = {**closed, "x-kubernetes-preserve-unknown-fields": True}
    assert _ok(kept, {"b": 1})
    mapping = {"type": "object", "additionalProperties": {"type": "string"}}
    assert _ok(mapping, {"any": "key"}) and not _ok(mapping, {"any": 1})
    embedded = {**closed, "x-kubernetes-embedded-resource": True}
    assert _ok(embedded, {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "a": "x"})


def test_nullable_lists_and_formats():
    assert _ok({"type": "string", "nullable": True}, None)
    assert not _ok({"type": "string"}, None)
    ports = {"type": "array", "x-kubernetes-list-type": "map",
             "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
             "items": {"type": "object", "properties": {
                 "containerPort": {"type": "integer"},
                 "protocol": {"type": "string", "default": "TCP"}}}}
    assert _ok(ports, [{"containerPort": 80}, {"containerPort": 80, "protocol": "UDP"}])
    assert not _ok(ports, [{"containerPort": 80}, {"containerPort": 80, "protocol": "TCP"}])
    tags = {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}
    assert _ok(tags, ["a", "b"]) and not _ok(tags, ["a", "a"])
    atomic = {"type": "array", "x-kubernetes-list-type": "atomic", "items": {"type": "string"}}
    assert _ok(atomic, ["a", "a"])
    int32 = {"type": "integer", "format": "int32"}
    assert _ok(int32, 2**31 - 1) and not _ok(int32, 2**31)


def test_cel_rules_are_evaluated_or_reported():
    assert k8s._cel("!(has(self.a) && has(self.b))", {"a": 1}) is True
    assert k8s._cel("!(has(self.a) && has(self.b))", {"a": 1, "b": 2}) is False
    assert k8s._cel("has(self.a) || has(self.b)", {}) is False
    assert k8s._cel("self in ['x', 'y']", "y") is True and k8s._cel("self in ['x']", "z") is False
    assert k8s._cel("self == oldSelf", "anything") is True  # on create there is no old object
    assert k8s._cel("self.size() <= 63", "x") is None  # outside the subset: not passed
    assert k8s._cel("__import__('os')", None) is None
