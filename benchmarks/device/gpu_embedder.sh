#!/usr/bin/env bash
# The embedder benchmark on the lent GPU machine (run there by the device tool, from the repo
# root, with .dev/ carried: benchmarks/device/pack.sh makes it):
#
#   bash benchmarks/device/gpu_embedder.sh            # figures and logs land in $OUT
#
# 1. gpu_check.py: raw encode in float32 and float16, the tokenizer alone, fp16 vs fp32 vectors.
# 2. bench_embedder.py in float16 on one replica with num_gpus=1: the limit (raw encode), then
#    batched and unbatched through handles, callers spread over 4 processes.
# 3. The same replica with 4 workers (tokenising overlaps the GPU), then 2 replicas with
#    num_gpus=0.5 sharing the GPU: batched only, against step 2's limit.
# Each step has its own time limit, so one that hangs still leaves the others' figures.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
TEXTS=${TEXTS:-4096}
START=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - START )) s)"; }
# What a step killed by its time limit leaves behind (its Ray), before the next step starts one.
cleanup() { pkill -9 -f 'ray/core/src/ray' 2>/dev/null; pkill -9 -f 'ray::' 2>/dev/null; pkill -9 -f 'default_worker.py' 2>/dev/null; sleep 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc; free -g | head -2
step "unpack"
mkdir -p /tmp/site /tmp/minilm /tmp/corpus
python3 - <<'PY' || exit 1
import lzma, shutil, tarfile
for archive, dest in ((".dev/site312.tar.xz", "/tmp/site"), (".dev/minilm-skeleton.tar.xz", "/tmp/minilm")):
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="fully_trusted")
with lzma.open(".dev/corpus.jsonl.xz") as src, open("/tmp/corpus/corpus.jsonl", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
export PATH=/tmp/site/bin:$PATH
python3 -c "import ray, torch, transformers, sentence_transformers as st, pydantic; print('ray', ray.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'st', st.__version__, 'pydantic', pydantic.__version__, 'cuda', torch.cuda.is_available())" || exit 1
python3 benchmarks/device/random_weights.py /tmp/minilm || exit 1
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 > "$OUT/smi.csv" 2>/dev/null &
SMI=$!
COMMON=(--model /tmp/minilm --corpus /tmp/corpus --texts "$TEXTS")
step "gpu_check"
timeout 90 python3 benchmarks/device/gpu_check.py "${COMMON[@]}" --json "$OUT/gpu_check.json" 2>&1 \
    | tee -a "$OUT/full.log" | grep -v -i warn
BENCH=(python3 benchmarks/bench_embedder.py "${COMMON[@]}" --device cuda --dtype float16 --num-cpus 4
       --serve-batch 256 --wait-s 0.005 --driver-procs 4)
step "serve: 1 replica, num_gpus=1, 1 worker"
timeout 170 "${BENCH[@]}" --batch-sizes 128,256,512 --num-gpus 1 --callers 8,64,256 \
    --texts-per-call 1,32 --json "$OUT/serve_1x1.json" 2>&1 | tee -a "$OUT/full.log" \
    | grep -E "^(serve|limit|raw|[0-9]+ texts)|Error"
LIMIT=$(python3 -c "import json; print(json.load(open('$OUT/serve_1x1.json'))['limit']['texts_per_s'])" 2>/dev/null || echo 1)
cleanup
step "serve: 1 replica, num_gpus=1, 4 workers"
timeout 100 "${BENCH[@]}" --limit "$LIMIT" --num-gpus 1 --workers 4 --modes batched --callers 64,256 \
    --texts-per-call 1,32 --json "$OUT/serve_1x4w.json" 2>&1 | tee -a "$OUT/full.log" \
    | grep -E "^(serve|limit)|Error"
cleanup
step "serve: 2 replicas, num_gpus=0.5 each, 4 workers"
timeout 100 "${BENCH[@]}" --limit "$LIMIT" --num-gpus 0.5 --replicas 2 --workers 4 --modes batched \
    --callers 64,256 --texts-per-call 1,32 --json "$OUT/serve_2x4w.json" 2>&1 \
    | tee -a "$OUT/full.log" | grep -E "^(serve|limit)|Error"
cleanup; kill $SMI 2>/dev/null
step "done"
awk -F', ' 'NR > 1 {u = $2 + 0; m = $3 + 0; if (u > mu) mu = u; if (m > mm) mm = m} END {print "GPU peak utilisation", mu, "%, peak memory used", mm, "MiB"}' "$OUT/smi.csv"
