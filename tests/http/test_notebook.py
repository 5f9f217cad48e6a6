"""notebooks/quickstart.ipynb runs top to bottom (its cells assert what they show)."""

from __future__ import annotations


import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT, free_port, isolated_serve_env

pytestmark = pytest.mark.slow


def test_quickstart_notebook_executes(tmp_path, model_cache, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAGSERVE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAGSERVE_MODEL_CACHE", str(model_cache))
    monkeypatch.setenv("RAGSERVE_PORT", str(free_port()))
    for key, value in isolated_serve_env().items():  # its own local Ray
        monkeypatch.setenv(key, value)
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "vectors of dimension 384" in outputs
    assert "reranked by retrieval" in outputs  # the offline fallback keeps the hybrid order
