"""Layers enforced, not hoped for: every import in the repository is checked against one-way rules.

Each ``.py`` file (and each notebook code cell) is parsed with ``ast``; every ``import`` and
``from … import`` counts, wherever it sits (a function body, ``if TYPE_CHECKING:``), relative
imports are resolved against the importing module, and ``importlib.import_module("…")`` /
``__import__("…")`` with a literal name count too. A broken rule fails with one line per import:
``path:line: module imports name  [rule]``.
"""

from __future__ import annotations

import ast
import json
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]

# Folders that hold no project code (or someone else's).
SKIP_DIRS = {".venv", "venv", ".git", "__pycache__", ".pytest_cache", "build", "dist",
             "node_modules", ".ragserve", ".mypy_cache", ".ruff_cache"}

# A stage package holds one role's protocol and backends. Pieces two stages share live in core
# modules of their own (ragserve.lexical, ragserve.devices, ragserve.ordering, ragserve.config,
# ragserve.schemas), so any stage can be replaced or moved without dragging another along.
STAGES = ("ragserve.embedding", "ragserve.retrieval", "ragserve.reranking",
          "ragserve.generation", "ragserve.cache")
# The outer ring of the core: what talks to users. Stages and the pipeline sit below it.
FRONTS = ("ragserve.edge", "ragserve.cli", "ragserve.client", "ragserve.eval")
# What the HTTP edge may see of the core: the service protocol and the plain data around it.
EDGE_MAY_IMPORT = ("ragserve.edge", "ragserve.service", "ragserve.schemas", "ragserve.errors",
                   "ragserve.config",
                   # the edge's hooks: metrics, the ingress span and request logs (issue 15)
                   "ragserve.observability",
                   # the guard's checks: API keys, scopes, limits and the admin key routes (issue 14)
                   "ragserve.security")


def within(name: str, *prefixes: str) -> bool:
    """Whether dotted ``name`` is one of ``prefixes`` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def stage_of(name: str) -> str | None:
    return next((s for s in STAGES if within(name, s)), None)


def is_private_stage_module(name: str) -> bool:
    """``ragserve.<stage>._x`` (at any depth below the stage); dunder names are not private."""
    stage = stage_of(name)
    if stage is None:
        return False
    rest = name[len(stage) + 1:].split(".") if name != stage else []
    return any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in rest)


@dataclass(frozen=True)
class Rule:
    name: str
    applies: Callable[[str], bool]  # to the importing module
    forbids: Callable[[str, str], bool]  # (importer, imported)


RULES = (
    Rule("the core never imports Ray, deployments, graphs, scripts, benchmarks or tests",
         lambda m: within(m, "ragserve"),
         lambda m, i: within(i, "ray", "deployments", "graphs", "scripts", "benchmarks", "tests")),
    Rule("deployments never import graphs, scripts, benchmarks or tests",
         lambda m: within(m, "deployments"),
         lambda m, i: within(i, "graphs", "scripts", "benchmarks", "tests")),
    Rule("graphs never import scripts, benchmarks or tests",
         lambda m: within(m, "graphs"),
         lambda m, i: within(i, "scripts", "benchmarks", "tests")),
    Rule("stage packages never import each other",
         lambda m: stage_of(m) is not None,
         lambda m, i: stage_of(i) not in (None, stage_of(m))),
    Rule("stages and the pipeline never import the edge, the CLI, the client or eval",
         lambda m: stage_of(m) is not None or within(m, "ragserve.pipeline"),
         lambda m, i: within(i, *FRONTS)),
    Rule("the HTTP edge sees only ragserve.service, .schemas, .errors and .config of the core",
         lambda m: within(m, "ragserve.edge"),
         lambda m, i: within(i, "ragserve") and not within(i, *EDGE_MAY_IMPORT)),
    Rule("nothing outside ragserve/ imports a stage package's private module",
         lambda m: not within(m, "ragserve"),
         lambda m, i: is_private_stage_module(i)),
)


@dataclass(frozen=True)
class Source:
    """One unit of code: a module file or a notebook cell."""
    where: str  # for messages: a path relative to the root, with a cell number for notebooks
    module: str  # dotted name of the importing module
    is_package: bool  # an __init__.py: relative imports start at the module itself
    text: str


def module_name(rel: Path) -> tuple[str, bool]:
    parts = list(rel.with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def files(root: Path) -> Iterator[Path]:
    """The ``.py`` and ``.ipynb`` files under ``root``, without descending into ``SKIP_DIRS``."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(names):
            if name.endswith((".py", ".ipynb")):
                yield Path(folder, name)


def sources(root: Path) -> Iterator[Source]:
    for path in files(root):
        rel = path.relative_to(root)
        if path.suffix == ".py":
            module, is_package = module_name(rel)
            yield Source(str(rel), module, is_package, path.read_text(encoding="utf-8"))
        elif path.suffix == ".ipynb":
            module, _ = module_name(rel)
            cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
            for n, cell in enumerate(cells):
                if cell.get("cell_type") != "code":
                    continue
                text = "".join(cell.get("source", ""))
                # IPython magics and shell escapes are not Python; keep the line numbers.
                text = "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                                 for line in text.splitlines())
                yield Source(f"{rel}[cell {n}]", module, False, text)


def known_modules(root: Path) -> set[str]:
    """Dotted names of the modules and packages (namespace packages included) under ``root``."""
    names: set[str] = set()
    for src in sources(root):
        parts = src.module.split(".")
        names.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))
    return names


def resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    """``from <level dots><target> import …`` inside ``module``, as an absolute dotted name."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)] if level - 1 <= len(base) else []
    return ".".join(base + ([target] if target else []))


def imports(src: Source, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, dotted name) for every import in ``src``. ``from a import b`` names ``a.b`` when
    that is a module of the tree (a submodule imported by name), else ``a``."""
    tree = compile(src.text, src.where, "exec",
                   flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = (resolve_relative(src.module, src.is_package, node.level, node.module)
                    if node.level else node.module or "")
            for alias in node.names:
                full = f"{base}.{alias.name}" if base else alias.name
                yield node.lineno, full if full in known else base
        elif isinstance(node, ast.Call) and _called(node) in ("import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(
                    node.args[0].value, str):
                yield node.lineno, node.args[0].value


def _called(call: ast.Call) -> str | None:
    """``f`` for ``f(...)`` and ``x.f(...)``."""
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def violations(root: Path) -> list[str]:
    known = known_modules(root)
    found = []
    for src in sources(root):
        rules = [r for r in RULES if r.applies(src.module)]
        if not rules:
            continue
        for line, name in imports(src, known):
            found += [f"{src.where}:{line}: {src.module} imports {name}  [{r.name}]"
                      for r in rules if r.forbids(src.module, name)]
    return sorted(set(found))


def test_every_import_keeps_the_layers():
    offenders = violations(ROOT)
    assert not offenders, "imports that break a layering rule (RULES above):\n  " + "\n  ".join(
        offenders)


def test_the_checker_sees_the_whole_tree():
    """A walk that silently found nothing would pass every rule."""
    names = {src.module for src in sources(ROOT)}
    assert {"ragserve.edge.app", "ragserve.pipeline.rag", "deployments.ingress", "graphs.rag",
            "scripts.local_ray", "tests.conftest", "benchmarks.common"} <= names
    assert not any(n.startswith(".") for n in names)  # .venv, .git: not project code


# --- the checker checks: a small tree that breaks each rule once -------------------------------

def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_the_checker_catches_each_kind_of_violation(tmp_path):
    write_tree(tmp_path, {
        "ragserve/schemas.py": "",
        "ragserve/lexical.py": "",
        "ragserve/edge/__init__.py": "",
        "ragserve/edge/app.py": """
            from ragserve.schemas import Query      # allowed
            from . import guard                       # itself: allowed
            from ragserve.pipeline import RAGPipeline  # a concrete pipeline
            """,
        "ragserve/edge/guard.py": "",
        "ragserve/pipeline/__init__.py": "",
        "ragserve/pipeline/rag.py": """
            def build():
                from ragserve.cli import main   # inside a function still counts
            """,
        "ragserve/embedding/__init__.py": "from .base import Embedder\n",
        "ragserve/embedding/base.py": """
                from ..lexical import tokenize          # a core module: allowed
                from ..reranking import lexical         # another stage, relative
                import importlib
                importlib.import_module("ray.serve")
            """,
        "ragserve/embedding/_pool.py": "",
        "ragserve/reranking/__init__.py": "",
        "ragserve/reranking/lexical.py": "",
        "deployments/__init__.py": "",
        "deployments/embedder.py": "from graphs.args import Args\n",
        "graphs/__init__.py": "",
        "graphs/args.py": "",
        "graphs/rag.py": "from scripts.local_ray import free_port\n",
        "scripts/__init__.py": "",
        "scripts/local_ray.py": "",
        "tests/test_x.py": """
            from ragserve.embedding import _pool
            from ragserve.embedding._pool import Pool
            """,
        ".venv/lib/site.py": "import ragserve.embedding._pool\n",  # not project code
        "notebooks/demo.ipynb": json.dumps({"cells": [
            {"cell_type": "code", "source": ["%load_ext autoreload\n",
                                             "x = await f()\n",
                                             "from ragserve.embedding._pool import Pool\n"]}]}),
    })
    found = violations(tmp_path)
    expected = [
        ("deployments/embedder.py:1:", "graphs.args", "deployments never import graphs"),
        ("graphs/rag.py:1:", "scripts.local_ray", "graphs never import scripts"),
        ("notebooks/demo.ipynb[cell 0]:3:", "ragserve.embedding._pool", "private module"),
        ("ragserve/edge/app.py:4:", "ragserve.pipeline", "the HTTP edge sees only"),
        ("ragserve/embedding/base.py:3:", "ragserve.reranking.lexical", "stage packages never"),
        ("ragserve/embedding/base.py:5:", "ray.serve", "the core never imports Ray"),
        ("ragserve/pipeline/rag.py:3:", "ragserve.cli", "never import the edge, the CLI"),
        ("tests/test_x.py:2:", "ragserve.embedding._pool", "private module"),
        ("tests/test_x.py:3:", "ragserve.embedding._pool", "private module"),
    ]
    assert len(found) == len(expected), "\n".join(found)
    for line, (where, name, rule) in zip(found, expected):
        assert line.startswith(where) and f" imports {name} " in line and rule in line, line


def test_a_tree_that_keeps_the_rules_passes(tmp_path):
    write_tree(tmp_path, {
        "ragserve/lexical.py": "",
        "ragserve/service.py": "",
        "ragserve/edge/__init__.py": "from ragserve.service import RagService\n",
        "ragserve/retrieval/__init__.py": "from ragserve.lexical import tokenize\n",
        "ragserve/pipeline/rag.py": "from ragserve.retrieval import Retriever\n",
        "deployments/retriever.py": "from ragserve.retrieval import Retriever\nimport ray\n",
        "graphs/rag.py": "from deployments.retriever import RetrieverDeployment\n",
        "tests/test_x.py": "from scripts.local_ray import free_port\nfrom graphs.rag import app\n",
    })
    assert violations(tmp_path) == []


def test_relative_imports_resolve_against_the_importing_module():
    assert resolve_relative("ragserve.embedding.base", False, 1, "heap") == (
        "ragserve.embedding.heap")
    assert resolve_relative("ragserve.embedding", True, 1, "base") == "ragserve.embedding.base"
    assert resolve_relative("ragserve.embedding.base", False, 2, "lexical") == "ragserve.lexical"
    assert resolve_relative("ragserve.embedding", True, 2, None) == "ragserve"
