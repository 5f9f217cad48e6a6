"""Render configs/cluster.yaml into k8s/rayservice.yaml's serveConfigV2 (one source of truth).

    .venv/bin/python scripts/render_k8s.py          # rewrite the block
    .venv/bin/python scripts/render_k8s.py --check  # exit 1 when out of sync
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "configs" / "cluster.yaml"
TARGET = ROOT / "k8s" / "rayservice.yaml"
KEY = "  serveConfigV2: |"
INDENT = "    "


def render(manifest: str, serve_config: str) -> str:
    lines = manifest.splitlines()
    start = lines.index(KEY) + 1
    end = start
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(INDENT)):
        end += 1
    block = [(INDENT + line) if line.strip() else "" for line in serve_config.splitlines()]
    return "\n".join(lines[:start] + block + lines[end:]) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    current = TARGET.read_text()
    wanted = render(current, SOURCE.read_text())
    if args.check:
        if current != wanted:
            print(f"{TARGET.relative_to(ROOT)} is out of sync with {SOURCE.relative_to(ROOT)}; "
                  "run scripts/render_k8s.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
