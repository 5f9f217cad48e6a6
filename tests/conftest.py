"""Shared fixtures: one local Ray + Serve per test session, on a free loopback port."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

# Test processes and the Ray workers they start inherit these (set before Ray starts).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub retries: fall back at once
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]

# One port picker for tests and benchmarks (not via benchmarks.common: importing it sets the
# benchmarks' own Serve environment in this process).
from scripts.local_ray import export_for_ray, free_port, isolated_env, stop_haproxy  # noqa: E402


def wait_until_routed(base_url: str, path: str = "/healthz", timeout_s: float = 60.0) -> None:
    """Block until Serve's HTTP side routes ``path`` to the application. ``serve.run`` returns
    when the replicas are up; the proxy (and HAProxy, in throughput mode) learns the route a
    moment later — seconds on a loaded machine — and answers 404 until then."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(base_url + path, timeout=5).status_code != 404:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was not routed within {timeout_s:g}s")
        time.sleep(0.2)


def isolated_serve_env() -> dict[str, str]:
    """Serve's process-wide settings (``graphs.serve_env``) for one more Ray on this machine:
    its own HAProxy folder and ports, so it never meets another test's or a developer's; what
    HAProxy leaves running there is stopped when the session ends."""
    env = isolated_env()
    atexit.register(stop_haproxy, env)
    return env


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """Converted-model cache shared by the session (the GGUF conversion happens once)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def serve_instance():
    """A local Ray with Serve's HTTP proxy on a free loopback port. Yields the base URL."""
    import ray
    from ray import serve

    port = free_port()
    # The session's Ray runs the way `make serve` runs it; the variables are taken back once it
    # has started, so that processes the tests start themselves choose their own.
    saved = dict(os.environ)
    export_for_ray(isolated_serve_env())
    ray.init(
        num_cpus=4,  # logical CPUs: lets several small test apps be placed on 2 cores
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {k: os.environ[k] for k in (
            "HF_HUB_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS", "TOKENIZERS_PARALLELISM")}},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    os.environ.clear()
    os.environ.update(saved)
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def wait_until(predicate, timeout_s: float = 60.0, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"condition not met within {timeout_s}s")


def small_app_args(tmp: Path, model_cache: Path, **overrides) -> dict:
    """Embedded-default args sized for tests: bundled models, Qdrant in a temp folder."""
    args = {
        "embedder": {"config": {"torch_threads": 1},
                     "deployment": {"max_ongoing_requests": 64,
                                    "ray_actor_options": {"num_cpus": 0.5}}},
        "retriever": {"config": {"path": str(tmp / "qdrant"), "collection": "test"},
                      "deployment": {"ray_actor_options": {"num_cpus": 0.25}}},
        "reranker": {"deployment": {"ray_actor_options": {"num_cpus": 0.25}}},
        "generator": {
            "config": {
                "backend": {"backend": "local", "cache_dir": str(model_cache),
                            "torch_threads": 1},
                "default_max_tokens": 24,
                "max_tokens_cap": 64,
            },
            "deployment": {"ray_actor_options": {"num_cpus": 0.5}},
        },
        "ingress": {"deployment": {"ray_actor_options": {"num_cpus": 0.25}}},
    }
    for key, value in overrides.items():
        args[key] = value
    return args


async def construct(cls, *args, **kwargs):
    """Build a deployment class whose ``__init__`` is ``async`` (as Serve does) outside Serve."""
    obj = cls.__new__(cls)
    await obj.__init__(*args, **kwargs)
    return obj


class RedisServer:
    """A real ``redis-server`` on a free loopback port, owned by the test (no persistence).
    ``stop()``/``start()`` simulate an outage and a restart on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_until(answers, timeout_s=10, interval_s=0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


class LLMServer:
    """``tests/llm_server.py`` as a real process on a free port (see its docstring)."""

    def __init__(self) -> None:
        import sys

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.llm_server", "--port", str(self.port)], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, timeout_s=30, interval_s=0.1)

    def _answers(self) -> bool:
        import httpx

        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/admin/stats", timeout=1).is_success
        except httpx.HTTPError:
            return False

    def mode(self, mode: str, **options) -> None:
        import httpx

        httpx.post(f"http://127.0.0.1:{self.port}/admin/mode", json={"mode": mode, **options},
                   timeout=5).raise_for_status()

    def requests(self) -> int:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.port}/admin/stats", timeout=5).json()["requests"]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def llm_server():
    server = LLMServer()
    yield server
    server.kill()
