"""What every benchmark script shares: the offline environment, ports, percentiles, waiting."""

from __future__ import annotations

import os
import socket
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


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768–60999 on Linux) and above
    Ray's worker ports (10002–19999): a port handed out by the kernel (bind to 0) can be taken by
    one of the many outgoing connections Ray opens before the server that asked for it binds."""
    import random

    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
