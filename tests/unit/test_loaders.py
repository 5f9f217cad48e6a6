"""Loading files and folders into DocumentIn."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from ragserve.ingest.loaders import load_documents, sanitize_doc_id
from ragserve.schemas import ContentType, DocumentIn

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    _write(root / "guide.md", "Intro line\n\n# Getting Started\n\nRun `make serve`.\n")
    _write(root / "notes.txt", "Plain notes about the weather.\n")
    _write(root / "api" / "reference.rst", "API Reference\n=============\n\nCalls.\n")
    _write(root / "api" / "client.py", "def hello():\n    return 'hi'\n")
    _write(root / "config.yaml", "replicas: 2\n")
    _write(root / "settings.json", '{"b": 1, "a": [1, 2]}')
    _write(root / "records.json", json.dumps([
        {"_id": "r1", "title": "First", "text": "Record one."},
        {"id": 7, "text": "Record seven."},
        {"text": "No id here."},
    ]))
    _write(root / "beir.jsonl", "\n".join([
        json.dumps({"_id": "doc-1", "title": "Alpha", "text": "Alpha text."}),
        "",
        json.dumps({"_id": "doc 2", "title": "", "text": "Beta text."}),
        "not json at all",
        json.dumps({"_id": "doc-3", "title": "no text field"}),
        json.dumps({"_id": "doc-4", "text": "Gamma text."}),
    ]) + "\n")
    # things that must be skipped
    _write(root / ".hidden" / "secret.md", "# hidden")
    _write(root / ".env.md", "# hidden file")
    _write(root / ".venv" / "lib" / "site.py", "x = 1\n")
    _write(root / "venv" / "lib" / "site.py", "x = 1\n")
    _write(root / "pkg" / "__pycache__" / "mod.py", "x = 1\n")
    _write(root / "node_modules" / "pkg" / "README.md", "# dep\n")
    _write(root / "image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00binary")
    _write(root / "latin1.txt", "caf\xe9".encode("latin-1"))
    _write(root / "empty.md", "   \n\n")
    _write(root / "broken.json", "{not json")
    _write(root / "big.txt", "x" * 2_000_001)
    _write(root / "photo.png", b"\x89PNG")
    return root


def _by_id(docs: list[DocumentIn]) -> dict[str, DocumentIn]:
    ids = [d.id for d in docs]
    assert len(ids) == len(set(ids)), "duplicate document ids"
    return {d.id: d for d in docs}


def test_walks_a_folder_with_every_file_type(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ragserve"):
        docs = _by_id(list(load_documents([tree], root=tree)))
    assert set(docs) == {
        "guide.md", "notes.txt", "api/reference.rst", "api/client.py", "config.yaml",
        "settings.json", "r1", "7", "records.json:2", "doc-1", "doc_2", "doc-4",
    }
    guide = docs["guide.md"]
    assert guide.content_type is ContentType.technical
    assert guide.text.startswith("Intro line")
    assert guide.metadata == {"source": "guide.md", "title": "Getting Started"}
    assert docs["notes.txt"].content_type is ContentType.general
    assert docs["notes.txt"].metadata["title"] == "notes.txt"
    assert docs["api/reference.rst"].metadata == {
        "source": "api/reference.rst", "title": "API Reference"
    }
    assert docs["api/client.py"].content_type is ContentType.code
    assert docs["api/client.py"].text == "def hello():\n    return 'hi'\n"
    assert docs["config.yaml"].content_type is ContentType.technical
    settings = docs["settings.json"]
    assert settings.content_type is ContentType.technical
    assert json.loads(settings.text) == {"b": 1, "a": [1, 2]} and "\n  " in settings.text

    # skipped files are reported, never raised
    text = caplog.text
    skipped = ("image.md", "latin1.txt", "broken.json", "big.txt", "beir.jsonl:4", "beir.jsonl:5")
    for name in skipped:
        assert name in text, f"no warning for {name}"
    # files of other types are ignored silently while walking; skipped folders are not entered
    assert not any(".hidden" in d.metadata["source"] or "venv" in d.metadata["source"]
                   or "node_modules" in d.metadata["source"] for d in docs.values())


def test_json_records_become_documents(tree: Path) -> None:
    docs = _by_id(list(load_documents([tree / "records.json"], root=tree)))
    assert list(docs) == ["r1", "7", "records.json:2"]
    assert docs["r1"].text == "First\n\nRecord one."
    assert docs["r1"].metadata == {"source": "records.json", "title": "First"}
    assert docs["7"].text == "Record seven."
    assert all(d.content_type is ContentType.technical for d in docs.values())


def test_beir_jsonl_lines_become_documents(tree: Path) -> None:
    docs = list(load_documents([tree / "beir.jsonl"], root=tree))
    assert [d.id for d in docs] == ["doc-1", "doc_2", "doc-4"]
    assert docs[0].text == "Alpha\n\nAlpha text."
    assert docs[0].metadata == {"source": "beir.jsonl", "title": "Alpha"}
    assert docs[1].text == "Beta text." and docs[1].metadata["title"] == "doc_2"


def test_jsonl_is_streamed_so_the_size_limit_applies_per_record(tmp_path: Path) -> None:
    lines = [json.dumps({"_id": f"d{i}", "text": "x" * 500}) for i in range(10)]
    path = _write(tmp_path / "corpus.jsonl", "\n".join(lines))
    assert path.stat().st_size > 2000
    docs = list(load_documents([path], root=tmp_path, max_bytes=2000))
    assert len(docs) == 10
    assert list(load_documents([_write(tmp_path / "a.md", "y" * 3000)], max_bytes=2000)) == []


def test_default_ids_are_relative_to_the_working_directory(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree.parent)
    docs = list(load_documents([Path("corpus/api")]))
    assert sorted(d.id for d in docs) == ["corpus/api/client.py", "corpus/api/reference.rst"]
    assert docs[0].metadata["source"].startswith("corpus/api/")
    # outside the working directory: relative to the argument's parent folder
    elsewhere = tree.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    docs = list(load_documents([tree / "guide.md", tree / "api"]))
    assert sorted(d.id for d in docs) == ["api/client.py", "api/reference.rst", "guide.md"]


def test_explicit_hidden_file_is_loaded_and_order_is_sorted(tmp_path: Path) -> None:
    _write(tmp_path / "b.md", "# B\n\nbee")
    _write(tmp_path / "a.md", "# A\n\nay")
    _write(tmp_path / "sub" / "c.txt", "sea")
    hidden = _write(tmp_path / ".draft.md", "# Draft\n\nwip")
    ids = [d.id for d in load_documents([tmp_path], root=tmp_path)]
    assert ids == ["a.md", "b.md", "sub/c.txt"]
    assert [d.id for d in load_documents([hidden], root=tmp_path)] == ["doc.draft.md"]


def test_unsafe_names_are_sanitised(tmp_path: Path) -> None:
    _write(tmp_path / "my notes (v2).md", "# Notes\n\ntext")
    _write(tmp_path / "_private.txt", "text")
    _write(tmp_path / "café.txt", "text")
    docs = list(load_documents([tmp_path], root=tmp_path))
    ids = sorted(d.id for d in docs)
    assert ids == ["caf_.txt", "doc_private.txt", "my_notes__v2_.md"]
    assert all(ID_PATTERN.match(i) for i in ids)
    # the source keeps the real path
    assert {d.metadata["source"] for d in docs} == {"my notes (v2).md", "_private.txt", "café.txt"}


def test_duplicate_ids_keep_the_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path / "a b.md", "first")
    _write(tmp_path / "a_b.md", "second")
    with caplog.at_level(logging.WARNING, logger="ragserve"):
        docs = list(load_documents([tmp_path], root=tmp_path))
    assert [(d.id, d.text) for d in docs] == [("a_b.md", "first")]
    assert "already used" in caplog.text


def test_missing_path_and_unsupported_file_only_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = _write(tmp_path / "data.csv", "a,b\n")
    with caplog.at_level(logging.WARNING, logger="ragserve"):
        assert list(load_documents([tmp_path / "nope", other])) == []
    assert "no such file" in caplog.text and "unsupported" in caplog.text


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("docs/guide.md", "docs/guide.md"),
        ("a b\\c?.md", "a_b_c_.md"),
        ("-lead", "doc-lead"),
        ("ünï", "doc_n_"),
        ("", "doc"),
    ],
)
def test_sanitize_doc_id(raw: str, expected: str) -> None:
    assert sanitize_doc_id(raw) == expected
    assert ID_PATTERN.match(sanitize_doc_id(raw))


def test_long_ids_are_shortened_with_a_hash() -> None:
    a, b = sanitize_doc_id("x" * 300 + "a"), sanitize_doc_id("x" * 300 + "b")
    assert len(a) == 256 and a != b and ID_PATTERN.match(a)
    DocumentIn(id=a, text="ok")  # accepted by the schema
