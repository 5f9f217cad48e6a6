"""What every benchmark script shares: the offline environment, ports, percentiles, waiting."""

from __future__ import annotations

import atexit
import os
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Before Ray starts: workers inherit these. No hub look-ups, no usage stats.
for key, value in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
                   "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)
RAY_ENV = {"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}}

# Serve's process-wide settings, as `make serve` sets them (throughput mode; run a benchmark
# with RAGSERVE_SERVE_MODE=classic for Serve's Python proxy), for the Ray a benchmark starts.
from scripts.local_ray import export_for_ray, free_port, isolated_env, stop_haproxy  # noqa: E402,F401

SERVE_MODE = os.environ.get("RAGSERVE_SERVE_MODE") or "throughput"
_SERVE_ENV = isolated_env(SERVE_MODE)
atexit.register(stop_haproxy, _SERVE_ENV)
export_for_ray(_SERVE_ENV)

QUESTIONS = [
    "How does the embedder batch requests?",
    "What happens when the reranker model cannot be loaded?",
    "How do I run the tests?",
    "Why does the retriever run a single replica in local mode?",
    "How is ingestion kept idempotent?",
    "Which generator backends are there?",
    "How are passages dropped when the context window is full?",
    "What does /readyz report?",
    "How do I deploy ragserve on Kubernetes?",
    "What chunk sizes are used for code?",
]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def wait_http(url: str, timeout_s: float = 300, proc=None) -> None:
    """Until ``url`` answers below 500; fails early if ``proc`` (a Popen) exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def process_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) used so far by every process, keyed by ``name[pid]``, where
    a Ray actor's name is its title (``ray::ServeReplica:app:Embedder``)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        name = (cmd[0].decode(errors="replace") if cmd and cmd[0] else stat.split()[1])
        name = name.rsplit("/", 1)[-1].split(" ")[0][:60]
        out[f"{name}[{pid}]"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_report(before: dict[str, float], after: dict[str, float], requests: int,
               top: int = 10) -> str:
    """Per-process CPU between two ``process_cpu_seconds`` snapshots, in ms per request."""
    used = {k: after[k] - before.get(k, 0.0) for k in after}
    busy = sorted(((v, k) for k, v in used.items() if v > 0), reverse=True)
    total = sum(v for v, _ in busy)
    parts = [f"{k} {v * 1000 / max(requests, 1):.1f}" for v, k in busy[:top]]
    return (f"CPU per request {total * 1000 / max(requests, 1):.1f} ms: " + ", ".join(parts))
