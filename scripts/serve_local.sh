#!/usr/bin/env bash
# Start the embedded default (serve run configs/local.yaml), wait until every stage is
# ready, ingest the project's own documentation as a sample corpus, then stay in the
# foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled TOKENIZERS_PARALLELISM=false
CONFIG=${RAGSERVE_CONFIG:-configs/local.yaml}
URL=${RAGSERVE_URL:-http://127.0.0.1:8000}
PATH="$PWD/.venv/bin:$PATH"
# Ray Serve's process-wide settings (throughput mode: HAProxy in front, gRPC between stages);
# RAGSERVE_SERVE_MODE=classic keeps Serve's Python proxy. See graphs/serve_env.py.
eval "$(python -m graphs.serve_env --local)"

start=$(date +%s)
serve run "$CONFIG" &
pid=$!
# HAProxy can outlive serve run: stop what is left in this run's own HAProxy folder.
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null;
      [ -n "${RAY_SERVE_HAPROXY_SERVER_STATE_BASE:-}" ] &&
      { pkill -f "haproxy.*$RAY_SERVE_HAPROXY_SERVER_STATE_BASE" 2>/dev/null;
        rm -rf "$RAY_SERVE_HAPROXY_SERVER_STATE_BASE"; }' INT TERM EXIT

echo "serve_local: waiting for $URL/readyz (first start converts the bundled LLM once) ..."
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
  ragserve query "How do I run the tests?"
  curl -s $URL/v1/query -H 'content-type: application/json' -d '{"query": "What does the reranker fall back to?"}'
Ctrl-C stops it.
MSG
wait $pid
