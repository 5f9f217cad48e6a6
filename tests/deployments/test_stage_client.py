"""The ingress's stage clients use the transport of the process they run in, not the one
pickled with a handle that a driver built (``deployments/_client.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
from deployments._client import StageClient

class Handle:
    def options(self, **kwargs):
        print(kwargs)
        return self

StageClient(Handle(), "embedder")
"""


@pytest.mark.parametrize("throughput, by_reference", [("1", False), ("0", True)])
def test_stage_client_takes_this_process_transport(throughput, by_reference):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = throughput  # what a replica's environment says
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    # Throughput mode: gRPC between stages (not by reference); else Ray actor calls.
    assert out.strip().splitlines()[-1] == f"{{'_by_reference': {by_reference}}}"
