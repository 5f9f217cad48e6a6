"""Start a local Ray the way every launcher here does: Serve's environment, a folder and ports of
its own, and what HAProxy leaves behind stopped afterwards.

The launchers are ``scripts/serve_local.sh`` (``make serve``), the test fixtures
(``tests/conftest.py``), the benchmarks (``benchmarks/common.py``) and the notebook's local Ray.
What the environment holds is defined once, in ``graphs/serve_env.py``; this module only gives
it a place on this machine. Import it from the repository root (``scripts.local_ray``).

    eval "$(.venv/bin/python -m scripts.local_ray --local)"   # export before `serve run`
    .venv/bin/python -m scripts.local_ray --stop "$RAY_SERVE_HAPROXY_SERVER_STATE_BASE"

HAProxy outlives a Ray that is killed rather than shut down (its manager actor dies, the
process it spawned does not), and holds its stats ports. Every local launcher therefore gives
its Ray a folder and ports of its own (``isolated_env``) and stops what is left in that folder
when it exits (``stop_haproxy``, or ``--stop`` from a shell).
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
import time

from graphs.serve_env import MODES, serve_env

__all__ = ["LocalCluster", "export_for_ray", "free_port", "isolated_env", "main", "stop_haproxy"]

_STATE_BASE = "RAY_SERVE_HAPROXY_SERVER_STATE_BASE"


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
    """``serve_env(local=True)`` with a fresh HAProxy folder name (``/tmp/rs-*``: short, see
    ``serve_env``) and free stats/metrics ports, for one local Ray among others.

    Only the *name* is reserved: the folder is removed again at once, and Ray's HAProxy
    manager makes it when HAProxy starts (``os.makedirs``). So a call whose exports are never
    used (``--local`` printed, no Ray started) leaves nothing behind, and a run that did start
    HAProxy removes it with ``stop_haproxy``."""
    state_dir = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    os.rmdir(state_dir)
    return serve_env(local=True, mode=mode, state_dir=state_dir,
                     haproxy_ports=(free_port("0.0.0.0"), free_port("0.0.0.0")))


def stop_haproxy(env: dict[str, str]) -> int:
    """Stop HAProxy processes left running from ``env``'s folder and remove it; how many.

    A process is HAProxy's when its command line names ``haproxy`` and the folder, so a
    neighbouring Ray's HAProxy (another folder) is never touched."""
    state_dir = env.get(_STATE_BASE)
    if not state_dir:
        return 0
    stopped = 0
    pids: list[int] = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():  # `--stop DIR` names the folder on its own command line
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if "haproxy" in cmd and state_dir in cmd:
            try:
                os.kill(int(pid), signal.SIGTERM)
                stopped += 1
                pids.append(int(pid))
            except OSError:
                pass
    # A stopping HAProxy can still write its state file: remove the folder once it is gone.
    deadline = time.monotonic() + 5.0
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
        time.sleep(0.05)
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


class LocalCluster:
    """Several Ray nodes on this machine, the way a KubeRay cluster has pods: a head and worker
    raylets (``ray.cluster_utils.Cluster``), each with its own CPUs and custom resources, so a
    deployment's ``ray_actor_options.resources`` decides which node its replicas land on.

    ``start()`` starts the head with Serve's environment (``isolated_env``), connects this
    process to it as the driver (before any worker exists, so the driver is attached to the
    head and a worker can be killed under it), starts Serve with its proxy on the head only —
    every node here shares one IP, so a proxy per node would contend for one port — and then
    the workers. ``kill(node)`` ends a worker's raylet and every process on it at once, as a
    lost machine would; ``add_node`` joins another (a replacement pod). ``shutdown()`` stops
    Serve, Ray, every node and what HAProxy left behind.

        cluster = LocalCluster({"CPU": 2, "ingress_node": 1}, [{"CPU": 2, "stage_node": 1}])
        base_url = cluster.start()
    """

    def __init__(self, head: dict[str, float], workers: list[dict[str, float]], *,
                 env_vars: dict[str, str] | None = None, mode: str | None = None) -> None:
        self.head_resources = dict(head)
        self.worker_resources = [dict(w) for w in workers]
        self.env_vars = dict(env_vars or {})
        self.mode = mode
        self.cluster = None
        self.workers: list = []
        self.node_names: dict[str, str] = {}  # node id -> "head", "worker1", ... (join order)
        self._env: dict[str, str] = {}

    @staticmethod
    def _node_args(resources: dict[str, float]) -> dict:
        custom = {k: v for k, v in resources.items() if k != "CPU"}
        return {"num_cpus": resources.get("CPU", 1), "resources": custom,
                "object_store_memory": 200 * 1024 * 1024}

    def start(self, host: str = "127.0.0.1") -> str:
        """Start the nodes, connect, start Serve on a free port; the HTTP base URL."""
        import ray
        from ray import serve
        from ray.cluster_utils import Cluster

        self._env = isolated_env(self.mode)
        saved = dict(os.environ)
        export_for_ray(self._env)  # the nodes' processes are started from this one
        try:
            self.cluster = Cluster(initialize_head=True,
                                   head_node_args=self._node_args(self.head_resources))
            self.node_names[self.head_node_id] = "head"
            ray.init(address=self.cluster.address, log_to_driver=False,
                     runtime_env={"env_vars": self.env_vars} if self.env_vars else None)
            port = free_port(host)
            serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
            for resources in self.worker_resources:
                self.add_node(resources)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return f"http://{host}:{port}"

    def add_node(self, resources: dict[str, float]):
        """Join one more worker node with ``resources``; the node (``node.node_id``)."""
        saved = dict(os.environ)
        export_for_ray(self._env)
        try:
            node = self.cluster.add_node(**self._node_args(resources))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.cluster.wait_for_nodes()
        self.workers.append(node)
        self.node_names[node.node_id] = f"worker{len(self.node_names)}"
        return node

    @property
    def head_node_id(self) -> str:
        return self.cluster.head_node.node_id

    def kill(self, node) -> None:
        """End ``node``'s raylet and every process on it without a graceful stop."""
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def shutdown(self) -> None:
        import ray
        from ray import serve

        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()
            if self.cluster is not None:
                self.cluster.shutdown()
            stop_haproxy(self._env)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m scripts.local_ray",
        description="Print `export` lines for Ray Serve's environment, or stop what a local "
                    "Ray's HAProxy left in its folder.")
    ap.add_argument("--local", action="store_true",
                    help="one machine, no load balancer in front; HAProxy in a folder and on "
                         "ports of its own (isolated_env)")
    ap.add_argument("--mode", choices=MODES, default=None)
    ap.add_argument("--stop", metavar="DIR",
                    help="stop the HAProxy processes running from DIR (an --local run's "
                         f"${_STATE_BASE}) and remove DIR; prints nothing")
    args = ap.parse_args(argv)
    if args.stop is not None:
        stop_haproxy({_STATE_BASE: args.stop})
        return 0
    env = isolated_env(args.mode) if args.local else serve_env(local=False, mode=args.mode)
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
