"""The manifests in k8s/ as an API server would see them, without a cluster: find them, render
k8s/ with and without each kustomize component, validate every object against the schema its
kind has, and work out what Ray resources each pod of a RayService advertises.

Validation (``problems(obj)``, an empty list when the object is valid):

- Built-in kinds (``apps/v1`` Deployment, ``v1`` Service, ...): ``kubernetes-validate``'s Python
  API in strict mode (an unknown field is an error, as ``kubectl apply``'s default
  ``--validate=strict`` makes it) against the OpenAPI schemas of ``KUBERNETES_VERSION``, which the
  package bundles.
- Custom resources (``ray.io`` RayService/RayCluster/RayJob, ``monitoring.coreos.com``
  PodMonitor/ServiceMonitor/PrometheusRule): the ``openAPIV3Schema`` of the CRD version named by
  the object's ``apiVersion``, read from the CRD files in ``crds_dir()``, checked with jsonschema
  the way the API server reads a structural schema: an unknown field is an error unless
  ``x-kubernetes-preserve-unknown-fields`` keeps it; ``x-kubernetes-int-or-string`` is an integer
  or a string; ``nullable`` admits null; ``x-kubernetes-embedded-resource`` admits
  apiVersion/kind/metadata; ``x-kubernetes-list-type: set|map`` forbids duplicate entries (map:
  by its ``x-kubernetes-list-map-keys``); ``int32``/``int64`` formats are range checked. The
  object's own ``metadata`` is checked against Kubernetes' ObjectMeta. CEL rules
  (``x-kubernetes-validations``) on the fields the object sets are evaluated for the small part
  of CEL these CRDs use (``cel_problems``); any other rule is reported, not passed.
- A kind with no schema on either side is a problem too, never a silent pass.
"""

from __future__ import annotations

import ast
import copy
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"

CRDS_ENV = "RAGSERVE_K8S_CRDS"
"""Environment variable naming the folder of CRD files (default: ``../shared/k8s-crds``)."""
DEFAULT_CRDS = ROOT.parent / "shared" / "k8s-crds"

KUBERNETES_VERSION = "1.31.0"
"""The Kubernetes version whose built-in schemas the manifests must satisfy: the oldest minor the
manifests claim to support (k8s/README.md), so that they use no field added since."""

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


# ------------------------------------------------------------------------------ the files


def load_docs(path: Path) -> list[dict]:
    """The non-empty YAML documents of a file."""
    return [d for d in yaml.load_all(path.read_text(), Loader=_Loader) if d]


def kustomization_dirs() -> list[Path]:
    """Every folder of k8s/ with a kustomization.yaml (the base and each component)."""
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def _patch_paths(kdir: Path) -> set[Path]:
    kust = load_docs(kdir / "kustomization.yaml")[0]
    entries = [*kust.get("patches", []), *kust.get("patchesJson6902", [])]
    paths = {(kdir / e["path"]).resolve() for e in entries if isinstance(e, dict) and "path" in e}
    paths |= {(kdir / e).resolve() for e in kust.get("patchesStrategicMerge", []) if isinstance(e, str)}
    return paths


def patch_files() -> set[Path]:
    """Files that some kustomization uses as a patch: fragments, not objects."""
    return set().union(*(_patch_paths(d) for d in kustomization_dirs()))


def manifest_files() -> list[Path]:
    """Every YAML file of k8s/ (at any depth) that holds whole objects: all but the
    kustomization files and the patches they apply. New files are picked up by themselves."""
    patches = patch_files()
    files = [*K8S.rglob("*.yaml"), *K8S.rglob("*.yml")]
    return sorted(p for p in files
                  if p.name not in {"kustomization.yaml", "kustomization.yml"} and p.resolve() not in patches)


# ---------------------------------------------------------------------- kustomize rendering


class UnsupportedKustomization(Exception):
    """The kustomization uses something ``render_simple`` does not implement."""


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render(kdir: Path) -> list[dict]:
    """The objects ``kubectl apply -k kdir`` would send: rendered by kustomize (or kubectl's
    built-in copy) when installed, else by ``render_simple``."""
    cmd = kustomize_command()
    if cmd is None:
        return render_simple(kdir)
    out = subprocess.run([*cmd, str(kdir)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} {kdir}: {out.stderr.strip()}")
    return [d for d in yaml.load_all(out.stdout, Loader=_Loader) if d]


def render_simple(kdir: Path) -> list[dict]:
    """A small kustomize: ``resources`` (files, and folders with their own kustomization),
    ``components`` and ``patches`` — JSON 6902 patches on any kind, strategic-merge patches on
    custom resources only (kustomize replaces their lists whole, knowing no merge keys for
    them). Anything else raises ``UnsupportedKustomization``."""
    (kust,) = load_docs(kdir / "kustomization.yaml")
    unknown = set(kust) - {"apiVersion", "kind", "resources", "components", "patches"}
    if unknown:
        raise UnsupportedKustomization(f"{kdir}: {sorted(unknown)}")
    objs: list[dict] = []
    for entry in kust.get("resources", []):
        path = kdir / entry
        objs += render_simple(path) if path.is_dir() else load_docs(path)
    for entry in kust.get("components", []):  # after the resources, before the own patches
        (comp,) = load_docs(kdir / entry / "kustomization.yaml")
        if comp.get("kind") != "Component" or set(comp) - {"apiVersion", "kind", "patches"}:
            raise UnsupportedKustomization(f"{kdir / entry}: only a Component with patches")
        _apply_patches(objs, kdir / entry, comp.get("patches", []))
    _apply_patches(objs, kdir, kust.get("patches", []))
    return objs


def _apply_patches(objs: list[dict], kdir: Path, entries: list[dict]) -> None:
    for entry in entries:
        text = (kdir / entry["path"]).read_text() if "path" in entry else entry["patch"]
        body = yaml.load(text, Loader=_Loader)
        if isinstance(body, list):  # JSON 6902
            target = entry.get("target")
            if not target:
                raise UnsupportedKustomization(f"{kdir}: a JSON patch needs a target")
            hits = [o for o in objs if _matches(o, target)]
            for obj in hits:
                for op in body:
                    _json_patch(obj, op)
        else:
            target = entry.get("target") or {"kind": body["kind"], "name": body["metadata"]["name"]}
            hits = [o for o in objs if _matches(o, target)]
            for obj in hits:
                if "." not in obj["apiVersion"].split("/")[0]:
                    raise UnsupportedKustomization(f"{kdir}: strategic merge on built-in {obj['kind']}")
                patch = {k: v for k, v in body.items() if k not in {"apiVersion", "kind"}}
                obj.update(_merge(obj, patch))
        if not hits:
            raise RuntimeError(f"{kdir}: patch {entry} matches no object")


def _matches(obj: dict, target: dict) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    return all(want == {"group": group, "version": version, "kind": obj["kind"],
                        "name": obj["metadata"]["name"]}.get(k, want)
               for k, want in target.items() if k in {"group", "version", "kind", "name"})


def _merge(base: Any, patch: Any) -> Any:
    if not (isinstance(base, dict) and isinstance(patch, dict)):
        return copy.deepcopy(patch)
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(base.get(k), v)
    return out


def _json_patch(obj: dict, op: dict) -> None:
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    node: Any = obj
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list) and last != "-":
        last = int(last)  # type: ignore[assignment]
    kind = op["op"]
    if kind == "test":
        if node[last] != op["value"]:
            raise RuntimeError(f"JSON patch test failed at {op['path']}: {node[last]!r}")
    elif kind == "add":
        if isinstance(node, list):
            node.insert(len(node) if last == "-" else last, copy.deepcopy(op["value"]))
        else:
            node[last] = copy.deepcopy(op["value"])
    elif kind == "replace":
        node[last]  # must exist
        node[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del node[last]
    else:
        raise UnsupportedKustomization(f"JSON patch op {kind}")


def components() -> dict[str, Path]:
    """The kustomize components of k8s/ (``kind: Component``), by folder name."""
    return {d.name: d for d in kustomization_dirs()
            if load_docs(d / "kustomization.yaml")[0].get("kind") == "Component"}


def variants() -> dict[str, tuple[Path, ...]]:
    """The ways to deploy k8s/: as it is (``default``) and with each component turned on."""
    return {"default": (), **{name: (path,) for name, path in components().items()}}


def rendered(parts: tuple[Path, ...]) -> list[dict]:
    """``render_variant(parts)`` for a test: skipped, saying why, when neither kustomize nor
    kubectl is installed and the kustomization uses more than ``render_simple`` knows (the
    files themselves are still validated one by one)."""
    try:
        return render_variant(parts)
    except UnsupportedKustomization as e:
        import pytest

        pytest.skip(f"kustomize/kubectl not installed and {e} is beyond tests/k8s_tools.py's "
                    "renderer: only the manifest files themselves are validated")


def render_variant(parts: tuple[Path, ...], simple: bool = False) -> list[dict]:
    """k8s/ with these components on, rendered as an overlay of one's own outside k8s/ would
    be (one below k8s/ could not use it as its base: kustomize refuses the cycle). A fresh copy
    each call; the rendering itself happens once per session."""
    return json.loads(_render_variant(tuple(parts), simple))


@functools.lru_cache(maxsize=None)
def _render_variant(parts: tuple[Path, ...], simple: bool) -> str:
    build = render_simple if simple else render
    if not parts:
        return json.dumps(build(K8S))
    with tempfile.TemporaryDirectory() as tmp:
        kdir = Path(tmp)
        rel = lambda p: os.path.relpath(p, kdir)  # noqa: E731 (kustomize refuses absolute roots)
        (kdir / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [rel(K8S)], "components": [rel(p) for p in parts]}))
        return json.dumps(build(kdir))


# --------------------------------------------------------------------------- validation


def crds_dir() -> Path:
    return Path(os.environ.get(CRDS_ENV) or DEFAULT_CRDS)


@functools.lru_cache(maxsize=4)
def _crd_index(folder: str) -> dict[tuple[str, str], dict]:
    """(group, kind) -> CRD, for every CRD file in the folder."""
    index = {}
    for path in sorted(Path(folder).glob("*.y*ml")):
        for doc in load_docs(path):
            if doc.get("kind") == "CustomResourceDefinition":
                index[(doc["spec"]["group"], doc["spec"]["names"]["kind"])] = doc
    return index


def crd_kinds(folder: Path | None = None) -> set[tuple[str, str]]:
    return set(_crd_index(str(folder or crds_dir())))


@functools.lru_cache(maxsize=16)
def _crd_validator(folder: str, group: str, kind: str, version: str) -> jsonschema.protocols.Validator:
    crd = _crd_index(folder)[(group, kind)]
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    if version not in served:
        raise LookupError(f"{group}/{version} {kind} is not served by the CRD "
                          f"(served: {sorted(served)})")
    schema = to_jsonschema(served[version]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # checked as ObjectMeta on its own
    return _CrdValidator(schema, format_checker=_FORMATS)


def to_jsonschema(node: dict) -> dict:
    """A CRD's structural OpenAPI v3 schema as a JSON schema (draft 4) with the API server's
    reading of the Kubernetes extensions (see the module docstring)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: to_jsonschema(sub) for name, sub in value.items()}
        elif key in {"items", "additionalProperties", "not"} and isinstance(value, dict):
            out[key] = to_jsonschema(value)
        elif key in {"allOf", "anyOf", "oneOf"}:
            out[key] = [to_jsonschema(sub) for sub in value]
        elif key in {"x-kubernetes-list-type", "x-kubernetes-list-map-keys"}:
            out[key] = value  # checked by the _list_type keyword
        elif key.startswith("x-kubernetes-") or key in {"nullable", "description", "default"}:
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if ("properties" in out and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False  # an unknown field: strict field validation rejects it
    if "x-kubernetes-list-map-keys" in out:  # map keys left out take the item schema's default
        items = node.get("items", {}).get("properties", {})
        out["x-defaults"] = {k: items.get(k, {}).get("default") for k in out["x-kubernetes-list-map-keys"]}
    return out


def _list_type(validator, list_type, instance, schema) -> Iterator[jsonschema.ValidationError]:
    if not validator.is_type(instance, "array") or list_type == "atomic":
        return
    seen: set[str] = set()
    for i, item in enumerate(instance):
        if list_type == "map" and isinstance(item, dict):
            defaults = schema.get("x-defaults", {})
            key = json.dumps([item.get(k, defaults.get(k)) for k in schema["x-kubernetes-list-map-keys"]])
        else:
            key = json.dumps(item, sort_keys=True)
        if key in seen:
            yield jsonschema.ValidationError(f"item {i} duplicates an earlier entry ({list_type} key {key})")
        seen.add(key)


_CrdValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-list-type": _list_type})
_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -2**31 <= value < 2**31


@_FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -2**63 <= value < 2**63


def _builtin_problems(obj: dict, version: str) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        return [f"{where}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]
    return []


def is_custom(obj: dict) -> bool:
    """A custom resource: its API group is no built-in one (those are "" or end in .k8s.io, or
    have no dot: apps, batch, ...)."""
    group = obj.get("apiVersion", "").rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def problems(obj: dict, crds: Path | None = None, version: str = KUBERNETES_VERSION) -> list[str]:
    """What the API server (with KubeRay's and the Prometheus Operator's CRDs installed) would
    reject in this object; [] when nothing."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["apiVersion and kind must be strings"]
    name = obj.get("metadata", {}).get("name", "")
    found = []
    if not (isinstance(name, str) and len(name) <= 253 and _DNS_SUBDOMAIN.match(name)):
        found.append(f"metadata/name: {name!r} is not a DNS-1123 subdomain")
    group, _, ver = api_version.rpartition("/")
    folder = str(crds or crds_dir())
    if (group, kind) in _crd_index(folder):
        try:
            validator = _crd_validator(folder, group, kind, ver)
        except LookupError as e:
            return [*found, str(e)]
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        found += [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]
        found += cel_problems(obj, Path(folder))
        # the object's own metadata: Kubernetes' ObjectMeta, via a kind that has nothing else
        meta = _builtin_problems({"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": obj.get("metadata", {})}, version)
        return found + meta
    if is_custom(obj):
        return [*found, f"no CRD for {group} {kind} in {folder}"]
    return found + _builtin_problems(obj, version)


def cel_problems(obj: dict, crds: Path | None = None) -> list[str]:
    """The CEL rules (``x-kubernetes-validations``) of the object's CRD on the fields it sets,
    evaluated as on create — for the small part of CEL the KubeRay and Prometheus Operator CRDs
    use (``has(self.f)``, ``!``, ``&&``, ``||``, ``self in [...]``, and ``self == oldSelf``,
    which holds when there is no old object). A rule outside that part is reported as not
    evaluated, never passed silently."""
    group, _, ver = obj["apiVersion"].rpartition("/")
    crd = _crd_index(str(crds or crds_dir())).get((group, obj["kind"]))
    if crd is None:
        return []
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == ver]
    found: list[str] = []

    def walk(schema: dict, value: Any, path: str) -> None:
        for rule in schema.get("x-kubernetes-validations", []):
            verdict, where = _cel(rule["rule"], value), path.lstrip("/") or "(root)"
            if verdict is None:
                found.append(f"{where}: CEL rule not evaluated here: {rule['rule']}")
            elif not verdict:
                found.append(f"{where}: {rule.get('message', rule['rule'])}")
        if isinstance(value, dict):
            extra = schema.get("additionalProperties")
            for k, v in value.items():
                sub = schema.get("properties", {}).get(k) or (extra if isinstance(extra, dict) else None)
                if sub is not None:
                    walk(sub, v, f"{path}/{k}")
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for i, v in enumerate(value):
                walk(schema["items"], v, f"{path}/{i}")

    walk(version["schema"]["openAPIV3Schema"], obj, "")
    return found


_CEL_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Compare,
              ast.In, ast.Name, ast.Load, ast.Constant, ast.List)


def _cel(rule: str, value: Any) -> bool | None:
    """A CEL rule of the supported kind evaluated on ``value``; None when it is of another."""
    expr = re.sub(r"has\(self\.(\w+)\)", r"('\1' in self)", rule)
    expr = expr.replace("self == oldSelf", "True").replace("&&", " and ").replace("||", " or ")
    expr = re.sub(r"!(?!=)", " not ", expr)
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if not isinstance(node, _CEL_NODES) or (isinstance(node, ast.Name) and node.id != "self"):
            return None
    return bool(eval(compile(tree, "<cel>", "eval"), {"__builtins__": {}}, {"self": value}))


# --------------------------------------------------------------------- Ray pod resources


def _quantity(q: Any) -> float:
    """A Kubernetes quantity (``"500m"``, ``"4Gi"``, ``2``) as a number."""
    s = str(q)
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
                "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                "P": 1e15, "E": 1e18}
    for suffix in sorted(suffixes, key=len, reverse=True):
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * suffixes[suffix]
    return float(s)


def ray_container(pod_spec: dict) -> dict:
    """The Ray container: KubeRay starts Ray in the pod's first container."""
    return pod_spec["containers"][0]


def ray_node_resources(group: dict) -> dict[str, float]:
    """The Ray resources a pod of this head or worker group advertises, as KubeRay starts it:
    ``rayStartParams`` where set, else the Ray container's limits (then requests) — CPU
    (KubeRay rounds a fractional CPU quantity up), memory in bytes, ``nvidia.com/gpu`` as GPU —
    plus the custom ``resources`` of ``rayStartParams``."""
    params = group.get("rayStartParams") or {}
    res = ray_container(group["template"]["spec"]).get("resources", {})

    def pick(name: str) -> float:
        for side in ("limits", "requests"):
            if name in res.get(side, {}):
                return _quantity(res[side][name])
        return 0.0

    node = {"CPU": float(params["num-cpus"]) if "num-cpus" in params else float(-(-pick("cpu") // 1)),
            "GPU": float(params["num-gpus"]) if "num-gpus" in params else pick("nvidia.com/gpu"),
            "memory": float(params["memory"]) if "memory" in params else pick("memory")}
    if "resources" in params:  # KubeRay wants the JSON quoted: '"{\"TPU\": 4}"'
        text = params["resources"].strip()
        custom = json.loads(json.loads(text) if text.startswith('"') else text)
        node.update({k: float(v) for k, v in custom.items()})
    return node


def replica_demand(ray_actor_options: Any) -> dict[str, float]:
    """What one replica of a Serve deployment reserves (``graphs.args.ActorOptions`` or None);
    Serve reserves one CPU when ``num_cpus`` is not set."""
    opts = ray_actor_options
    demand = {"CPU": 1.0 if opts is None or opts.num_cpus is None else float(opts.num_cpus),
              "GPU": float(opts.num_gpus or 0) if opts else 0.0,
              "memory": float(opts.memory or 0) if opts else 0.0}
    if opts is not None and opts.resources:
        demand.update({k: float(v) for k, v in opts.resources.items()})
    return {k: v for k, v in demand.items() if v > 0}


def fits(demand: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(k, 0.0) + 1e-9 >= v for k, v in demand.items())


def ray_groups(rayservice: dict) -> dict[str, dict]:
    """``{"head": headGroupSpec, <groupName>: workerGroupSpec, ...}``."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    return {"head": cluster["headGroupSpec"],
            **{g["groupName"]: g for g in cluster.get("workerGroupSpecs", [])}}


def pack(demands: list[dict[str, float]], nodes: list[tuple[str, dict[str, float]]]) -> list[str] | None:
    """First-fit decreasing of replica demands onto nodes, GPU replicas first; a replica without
    a GPU tries GPU-less nodes first (Ray keeps CPU work off GPU nodes when it can). The node
    name each replica landed on, or None when one does not fit."""
    free = [(name, dict(res)) for name, res in nodes]
    order = sorted(range(len(demands)), reverse=True,
                   key=lambda i: (demands[i].get("GPU", 0.0), demands[i].get("CPU", 0.0)))
    placed: list[str] = [""] * len(demands)
    for i in order:
        want = demands[i]
        candidates = sorted(free, key=lambda n: (not want.get("GPU")) and n[1].get("GPU", 0.0) > 0)
        for name, res in candidates:
            if fits(want, res):
                for k, v in want.items():
                    res[k] -= v
                placed[i] = name
                break
        else:
            return None
    return placed
