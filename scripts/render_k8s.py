"""Render configs/cluster.yaml into k8s/rayservice.yaml's serveConfigV2 (one source of truth).

    .venv/bin/python scripts/render_k8s.py          # rewrite the serveConfigV2 block
    .venv/bin/python scripts/render_k8s.py --check  # exit 1 when the two are out of sync

Only the literal block (``serveConfigV2: |``) of the manifest is replaced, as text, so the rest of
the manifest keeps its comments and layout; the source is copied verbatim, comments included.
PyYAML then checks the result: the manifest must load and its serveConfigV2 must load to the
same data as the source.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "configs" / "cluster.yaml"
TARGET = ROOT / "k8s" / "rayservice.yaml"

# `serveConfigV2: |` at any indentation (clip chomping only: `|-`/`|+` would change the text).
_KEY = re.compile(r"^(?P<indent> *)serveConfigV2: *\|[ \t]*(#.*)?$")


class RenderError(Exception):
    """The manifest has no serveConfigV2 block, or the rendered result does not round-trip."""


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def render(manifest: str, serve_config: str) -> str:
    """Return ``manifest`` with its serveConfigV2 block replaced by ``serve_config``."""
    source = yaml.safe_load(serve_config)
    if not isinstance(source, dict) or not source.get("applications"):
        raise RenderError("the Serve config must be a mapping with `applications`")
    if "\t" in serve_config:
        raise RenderError("the Serve config contains tabs; YAML block scalars need spaces")

    lines = manifest.splitlines()
    keys = [i for i, line in enumerate(lines) if _KEY.match(line)]
    if len(keys) != 1:
        raise RenderError(f"expected one `serveConfigV2: |` line in the manifest, found {len(keys)}")
    key = keys[0]
    block_indent = _KEY.match(lines[key])["indent"] + "  "
    end = key + 1  # the old block: blank lines and lines indented deeper than the key
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) >= len(block_indent)):
        end += 1
    while end > key + 1 and not lines[end - 1].strip():  # keep blank lines that follow the block
        end -= 1
    block = [block_indent + line if line.strip() else "" for line in serve_config.splitlines()]
    rendered = "\n".join(lines[: key + 1] + block + lines[end:]) + "\n"

    docs = [d for d in yaml.safe_load_all(rendered) if d]
    embedded = [d["spec"]["serveConfigV2"] for d in docs if d.get("kind") == "RayService"]
    if len(embedded) != 1 or yaml.safe_load(embedded[0]) != source:
        raise RenderError("the rendered serveConfigV2 does not load back to the Serve config")
    return rendered


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the manifest is out of sync")
    ap.add_argument("--source", type=Path, default=SOURCE, help="Serve config (default: %(default)s)")
    ap.add_argument("--target", type=Path, default=TARGET, help="RayService (default: %(default)s)")
    args = ap.parse_args(argv)
    current = args.target.read_text()
    try:
        wanted = render(current, args.source.read_text())
    except (RenderError, yaml.YAMLError, KeyError, TypeError) as e:
        print(f"render_k8s: {e}", file=sys.stderr)
        return 2
    if args.check:
        if current != wanted:
            sys.stderr.writelines(difflib.unified_diff(
                current.splitlines(keepends=True), wanted.splitlines(keepends=True),
                str(args.target), f"{args.target} (rendered from {args.source})",
            ))
            print(f"render_k8s: {args.target} is out of sync with {args.source}; "
                  "run scripts/render_k8s.py", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        args.target.write_text(wanted)
        print(f"render_k8s: wrote {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
