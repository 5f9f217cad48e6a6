#!/usr/bin/env bash
# Start the embedded default (serve run configs/local.yaml), wait until every stage is
# ready, ingest the project's own documentation as a sample corpus, then stay in the
# foreground until Ctrl-C (or SIGTERM): both stop it cleanly and quietly, with exit status 0,
# leaving no HAProxy folder (/tmp/rs-*) behind.
set -euo pipefail
# Job control: `serve run` gets a process group of its own, so the terminal's Ctrl-C reaches
# this script only, and serve run keeps Python's SIGINT handling (a background job of a
# non-interactive shell would ignore SIGINT). The script then stops it with SIGINT: Serve
# shuts down in order, where SIGTERM makes Ray's core worker print a stack trace.
set -m
cd "$(dirname "$0")/.."
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled TOKENIZERS_PARALLELISM=false
CONFIG=${RAGSERVE_CONFIG:-configs/local.yaml}
URL=${RAGSERVE_URL:-http://127.0.0.1:8000}
PATH="$PWD/.venv/bin:$PATH"
# Ray Serve's process-wide settings (throughput mode: HAProxy in front, gRPC between stages);
# RAGSERVE_SERVE_MODE=classic keeps Serve's Python proxy. See graphs/serve_env.py;
# scripts/local_ray.py gives this run an HAProxy folder (made by Ray when HAProxy starts)
# and ports of its own.
eval "$(python -m scripts.local_ray --local)"

pid=""
stopped=0
stop() {
  [ "$stopped" = 1 ] && return 0
  stopped=1
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "serve_local: stopping ..." >&2
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
  fi
  # HAProxy can outlive serve run: stop what is left in this run's own folder, then remove
  # it (the same stop_haproxy the tests and benchmarks use).
  if [ -n "${RAY_SERVE_HAPROXY_SERVER_STATE_BASE:-}" ]; then
    python -m scripts.local_ray --stop "$RAY_SERVE_HAPROXY_SERVER_STATE_BASE" || true
  fi
}
# Ctrl-C and SIGTERM are how this script is meant to end: exit 0 after a clean stop.
trap 'stop; exit 0' INT TERM
trap 'stop' EXIT

start=$(date +%s)
serve run "$CONFIG" &
pid=$!

echo "serve_local: waiting for $URL/readyz (first start prepares the bundled LLM once) ..."
for _ in $(seq 1 600); do
  if ! kill -0 $pid 2>/dev/null; then echo "serve_local: serve run exited" >&2; exit 1; fi
  if curl -fsS -o /dev/null "$URL/readyz" 2>/dev/null; then break; fi
  sleep 0.5
done
curl -fsS -o /dev/null "$URL/readyz" || { echo "serve_local: not ready after 300 s" >&2; exit 1; }
ready=$(date +%s)
echo "serve_local: ready in $((ready - start)) s"

ragserve --url "$URL" ingest README.md docs BENCHMARKS.md k8s/README.md --root .
cat <<MSG

ragserve is running at $URL (OpenAPI docs: $URL/docs). Try:
  .venv/bin/ragserve --url $URL query "How do I run the tests?"
  curl -s $URL/v1/query -H 'content-type: application/json' -d '{"query": "What does the reranker fall back to?"}'
One ingress replica (the in-process cache): if it dies, Serve restarts it in ~10 s and
requests meanwhile fail (the cache starts empty); configs/cluster.yaml runs two with Redis.
Ctrl-C stops it.
MSG
wait $pid
