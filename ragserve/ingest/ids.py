"""Deterministic ids for documents and chunks, so that ingestion is idempotent.

* :func:`doc_hash` fingerprints everything that decides a document's chunks and payload: its
  text, content type and metadata. Re-sending an unchanged document gives the same hash, so
  the service can answer ``unchanged`` and skip embedding it; any change gives a new hash.
* :func:`chunk_id` is a UUID (Qdrant point ids must be UUIDs or unsigned integers) derived
  from the document id, the chunk's position and a hash of the chunk's text. Re-sending a
  document therefore yields exactly the same point ids (an upsert overwrites, never
  duplicates), and a chunk whose text changes gets a new id. The position is part of the key
  so that two identical chunks in one document (a repeated licence header, a boilerplate
  paragraph) stay two distinct points instead of one overwriting the other.

A change to metadata alone keeps the chunk ids but changes ``doc_hash``: the service sees the
document as updated and rewrites the payloads in place.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from ragserve.schemas import ContentType

__all__ = ["CHUNK_ID_NAMESPACE", "doc_hash", "chunk_id", "text_hash"]

# Fixed forever: changing it changes every chunk id and forces a full re-index.
CHUNK_ID_NAMESPACE = uuid.UUID("6f1c2b8e-3d4a-5b6c-8d7e-9f0a1b2c3d4e")


def text_hash(text: str) -> str:
    """sha256 hex digest of the UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def doc_hash(text: str, content_type: ContentType | str, metadata: dict[str, Any] | None,
             acl: list[str] | None = None) -> str:
    """sha256 hex of ``content type NUL canonical-metadata-JSON NUL text``.

    The metadata JSON has sorted keys and fixed separators, so key order does not matter.
    JSON escapes control characters, so the NUL separators make the encoding unambiguous.
    Values JSON cannot represent are hashed by their ``str()``.
    """
    canonical_meta = json.dumps(
        metadata or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    kind = ContentType(content_type).value
    digest = hashlib.sha256()
    digest.update(f"{kind}\x00{canonical_meta}\x00".encode("utf-8", "surrogatepass"))
    if acl:  # an ACL change rewrites the document (no ACL: the hash documents had before ACLs)
        digest.update(("acl\x00" + "\x1f".join(sorted(set(acl))) + "\x00").encode())
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def chunk_id(doc_id: str, chunk_text: str, index: int, tenant: str = "default") -> str:
    """UUID5 of ``f"{doc_id}\\x00{index}\\x00{sha256(chunk_text)}"`` in a fixed namespace;
    for a tenant other than ``default``, ``f"{tenant}\\x00"`` leads the name, so the same
    document id in two tenants is two sets of points (``default`` keeps the ids indexes had
    before tenants)."""
    if index < 0:
        raise ValueError("chunk index must be >= 0")
    lead = "" if tenant == "default" else f"{tenant}\x00"
    return str(uuid.uuid5(CHUNK_ID_NAMESPACE,
                          f"{lead}{doc_id}\x00{index}\x00{text_hash(chunk_text)}"))
