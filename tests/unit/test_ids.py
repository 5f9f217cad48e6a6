"""Deterministic document hashes and chunk ids."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

from ragserve.ingest.chunking import TokenChunker, chunk_document
from ragserve.ingest.ids import CHUNK_ID_NAMESPACE, chunk_id, doc_hash, text_hash
from ragserve.schemas import ContentType, DocumentIn


def test_doc_hash_is_sha256_of_the_canonical_form() -> None:
    meta = {"title": "Guide", "source": "docs/guide.md", "tags": ["b", "a"]}
    expected = hashlib.sha256(
        ("technical\x00" + json.dumps(meta, sort_keys=True, separators=(",", ":")) + "\x00body")
        .encode()
    ).hexdigest()
    assert doc_hash("body", ContentType.technical, meta) == expected
    assert len(expected) == 64


def test_doc_hash_is_stable_and_ignores_key_order() -> None:
    a = doc_hash("text", "general", {"b": 1, "a": {"y": 2, "x": 1}})
    b = doc_hash("text", ContentType.general, {"a": {"x": 1, "y": 2}, "b": 1})
    assert a == b
    assert doc_hash("text", "general", None) == doc_hash("text", "general", {})


@pytest.mark.parametrize(
    "changed",
    [
        ("text!", "general", {"a": 1}),
        ("text", "technical", {"a": 1}),
        ("text", "general", {"a": 2}),
        ("text", "general", {"a": 1, "b": None}),
        ("text", "general", {"a": "1"}),
    ],
)
def test_doc_hash_changes_with_any_input(changed: tuple) -> None:
    assert doc_hash("text", "general", {"a": 1}) != doc_hash(*changed)


def test_doc_hash_separators_are_unambiguous() -> None:
    # moving characters between fields must not produce the same serialisation
    assert doc_hash('x"}\x00a', "general", {}) != doc_hash("a", "general", {"x": ""})
    with pytest.raises(ValueError):
        doc_hash("text", "poetry", {})


def test_chunk_id_is_a_uuid5_over_doc_index_and_text_hash() -> None:
    cid = chunk_id("docs/a.md", "hello", 3)
    parsed = uuid.UUID(cid)
    assert parsed.version == 5
    name = "docs/a.md\x003\x00" + hashlib.sha256(b"hello").hexdigest()
    assert cid == str(uuid.uuid5(CHUNK_ID_NAMESPACE, name))
    assert text_hash("hello") == hashlib.sha256(b"hello").hexdigest()


def test_chunk_id_is_stable_and_change_sensitive() -> None:
    base = chunk_id("doc-1", "some chunk text", 0)
    assert base == chunk_id("doc-1", "some chunk text", 0)
    assert base != chunk_id("doc-1", "some chunk text.", 0)  # text changed
    assert base != chunk_id("doc-2", "some chunk text", 0)  # other document
    assert base != chunk_id("doc-1", "some chunk text", 1)  # other position
    assert chunk_id("doc-1\x000", "x", 1) != chunk_id("doc-1", "x", 0)
    with pytest.raises(ValueError):
        chunk_id("doc-1", "x", -1)


def test_resending_a_document_gives_identical_ids_and_an_edit_changes_only_its_chunks() -> None:
    paragraphs = [f"Paragraph {i}. " + "Batching keeps replicas busy. " * 60 for i in range(12)]
    doc = DocumentIn(id="notes", text="\n\n".join(paragraphs), content_type="technical")
    chunker = TokenChunker()
    first = chunk_document(doc, chunker)
    again = chunk_document(DocumentIn(**doc.model_dump()), TokenChunker())
    assert len(first) > 3
    assert [c.chunk_id for c in first] == [c.chunk_id for c in again]
    assert {c.doc_hash for c in first} == {c.doc_hash for c in again} == {first[0].doc_hash}

    # edit the last paragraph: earlier chunks keep their ids, the last one changes
    edited_text = doc.text.replace("Paragraph 11.", "Paragraph eleven.")
    edited = chunk_document(doc.model_copy(update={"text": edited_text}), chunker)
    assert edited[0].doc_hash != first[0].doc_hash
    assert edited[0].chunk_id == first[0].chunk_id
    assert edited[-1].chunk_id != first[-1].chunk_id


def test_metadata_change_keeps_chunk_ids_but_changes_doc_hash() -> None:
    doc = DocumentIn(id="d", text="A short document.", metadata={"source": "a"})
    before = chunk_document(doc, TokenChunker())
    after = chunk_document(doc.model_copy(update={"metadata": {"source": "b"}}), TokenChunker())
    assert [c.chunk_id for c in before] == [c.chunk_id for c in after]
    assert before[0].doc_hash != after[0].doc_hash


def test_identical_chunks_in_one_document_stay_distinct() -> None:
    ids = {chunk_id("doc", "Licensed under Apache-2.0.", i) for i in range(5)}
    assert len(ids) == 5
