"""Stopping ``make serve`` (scripts/serve_local.sh): Ctrl-C and SIGTERM end it cleanly, quietly
and with status 0, and no HAProxy folder (``/tmp/rs-*``) is left — nor by a
``python -m scripts.local_ray --local`` call whose exports are never used.

The script runs for real, from a copy of the repository's launcher files, with stand-ins on
its PATH for what would start Ray: a ``serve`` that behaves as ``serve run`` does here (makes
the HAProxy folder as Ray's HAProxy manager does, starts an "haproxy" that outlives it in a
session of its own, answers ``/readyz``, shuts down on SIGINT and prints Ray's stack-trace
lines on SIGTERM) and a ``ragserve`` that ingests nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scripts import local_ray as lr

ROOT = Path(__file__).resolve().parents[2]

FAKE_SERVE = textwrap.dedent('''\
    #!{python}
    import http.server, os, signal, subprocess, sys, threading
    state = os.environ["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"]
    os.makedirs(state, exist_ok=True)                 # as Ray's HAProxy manager does
    open(os.path.join(state, "server-state"), "w").close()
    print("fake serve: state", state, flush=True)
    subprocess.Popen(["bash", "-c", f'exec -a "haproxy -f {{state}}/haproxy.cfg" sleep 120'],
                     start_new_session=True)          # HAProxy outlives a killed Ray
    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"{{}}")
        def log_message(self, *a): pass
    port = int(os.environ["RAGSERVE_URL"].rsplit(":", 1)[1])
    server = http.server.HTTPServer(("127.0.0.1", port), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    def term(*_):
        sys.stderr.write("*** SIGTERM received at time=1 on cpu 0 ***\\nPC: @ clock_nanosleep\\n")
        sys.exit(1)
    signal.signal(signal.SIGTERM, term)
    try:
        signal.pause()
    except KeyboardInterrupt:                         # serve run's own Ctrl-C path
        server.shutdown()
        sys.exit(0)
    ''')


@pytest.fixture
def launcher(tmp_path):
    """A copy of the launcher files with stand-ins for serve and ragserve on its PATH."""
    for rel in ("scripts/serve_local.sh", "scripts/local_ray.py", "scripts/__init__.py",
                "graphs/serve_env.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    (tmp_path / "graphs/__init__.py").write_text("")
    bin_ = tmp_path / ".venv/bin"
    bin_.mkdir(parents=True)
    stubs = {"serve": FAKE_SERVE.format(python=sys.executable),
             "ragserve": "#!/bin/sh\nexit 0\n",
             "python": f'#!/bin/sh\nexec "{sys.executable}" "$@"\n'}
    for name, text in stubs.items():
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    return tmp_path / "scripts/serve_local.sh"


def _haproxy_running(state: str) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "haproxy" in cmd and state in cmd:
            return True
    return False


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_serve_local_stops_cleanly_quietly_and_leaves_nothing(launcher, how):
    port = lr.free_port()
    env = {**os.environ, "RAGSERVE_URL": f"http://127.0.0.1:{port}"}
    env.pop("RAY_SERVE_HAPROXY_SERVER_STATE_BASE", None)
    # A session of its own, as a terminal gives `make serve`: Ctrl-C is SIGINT to its
    # foreground process group. A terminal's shell also leaves SIGINT at its default, which a
    # suite started in the background (`pytest ... &`: SIGINT ignored, and inherited) would not.
    proc = subprocess.Popen(["bash", str(launcher)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)
    out = ""
    deadline = time.monotonic() + 60
    while "Ctrl-C stops it" not in out and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out += line
    assert "Ctrl-C stops it" in out, out
    state = Path(next(line.split()[-1] for line in out.splitlines()
                      if line.startswith("fake serve: state")))
    assert state.is_dir() and _haproxy_running(str(state))
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    out += rest
    assert proc.returncode == 0, out
    assert "SIGTERM received" not in out and "PC: @" not in out and "Traceback" not in out, out
    assert not state.exists() and not _haproxy_running(str(state))


def test_local_exports_alone_leave_no_folder():
    before = set(Path("/tmp").glob("rs-*"))
    done = subprocess.run([sys.executable, "-m", "scripts.local_ray", "--local"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    exported = dict(line.removeprefix("export ").split("=", 1)
                    for line in done.stdout.splitlines())
    state = exported.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE")
    if state is not None:  # throughput mode: the name is reserved, Ray makes the folder
        assert state.startswith("/tmp/rs-") and not os.path.exists(state)
    assert set(Path("/tmp").glob("rs-*")) <= before
