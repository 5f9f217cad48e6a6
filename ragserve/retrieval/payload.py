"""How a chunk is stored in a Qdrant point, and how ragserve filters become Qdrant filters.

A point's id is the chunk id, its vectors are ``VECTOR_NAME`` and ``SPARSE_NAME``, its payload
holds the chunk's fields: ``doc_id`` and ``content_type`` at the top, user metadata under
``metadata``. The collection's metadata names what built its vectors; ``analyzer_mismatch``
is the check on the lexical side.
"""

from __future__ import annotations

import uuid
from typing import Any

from qdrant_client import models as qm

from ragserve.errors import ConfigurationError
from ragserve.schemas import Chunk, Filters
from ragserve.security.access import DEFAULT_TENANT, Access

__all__ = [
    "VECTOR_NAME",
    "SPARSE_NAME",
    "ANALYZER_KEY",
    "analyzer_mismatch",
    "TOP_LEVEL_FIELDS",
    "canonical_uuid",
    "point_payload",
    "chunk_fields",
    "payload_key",
    "doc_filter",
    "docs_condition",
    "metadata_filter",
    "access_conditions",
    "scoped_filter",
]

VECTOR_NAME = "dense"  # the named dense vector (cosine)
SPARSE_NAME = "lexical"  # the named sparse vector (BM25 term weights; Qdrant applies the IDF)

ANALYZER_KEY = "analyzer"  # collection metadata: ragserve.lexical.ANALYZER_ID of its lexical vectors

# Chunk fields stored at the top of the payload; every other filter field is user metadata.
TOP_LEVEL_FIELDS = frozenset({"doc_id", "content_type"})


def analyzer_mismatch(collection: str, metadata: dict[str, Any] | None,
                      analyzer: str) -> ConfigurationError | None:
    """The error to raise when a collection's lexical vectors were not analysed by
    ``analyzer`` (its metadata records another, or none: built before analyzers were
    recorded), else None. Only for a collection that has lexical vectors."""
    stored = (metadata or {}).get(ANALYZER_KEY)
    if stored == analyzer:
        return None
    built = (f"analyzer {stored!r}" if stored else
             "no recorded analyzer (the lexical analysis from before analyzers were recorded)")
    return ConfigurationError(
        f"collection {collection!r} holds lexical vectors built with {built}, but this "
        f"retriever analyses text with {analyzer!r}: sparse and hybrid search would compare "
        "terms that do not match. Re-index: delete the collection (or set "
        "retriever.collection to a new name) and ingest the documents again.",
        details={"collection": collection, "stored_analyzer": stored,
                 "configured_analyzer": analyzer},
    )


def canonical_uuid(value: str) -> str | None:
    """``value`` as a canonical UUID string, or None when it is not a UUID."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


def point_payload(chunk: Chunk) -> dict[str, Any]:
    return {
        "doc_id": chunk.doc_id,
        "chunk_index": chunk.chunk_index,
        "text": chunk.text,
        "content_type": chunk.content_type.value,
        "metadata": chunk.metadata,
        "doc_hash": chunk.doc_hash,
        "tenant": chunk.tenant,
        "acl": list(chunk.acl),
    }


def chunk_fields(point_id: Any, payload: dict[str, Any] | None) -> dict[str, Any]:
    """The ``Chunk`` fields of a stored point; defaults stand in for missing payload keys."""
    payload = payload or {}
    return {
        "chunk_id": str(point_id),
        "doc_id": payload.get("doc_id", ""),
        "chunk_index": payload.get("chunk_index", 0),
        "text": payload.get("text", ""),
        "content_type": payload.get("content_type", "general"),
        "metadata": payload.get("metadata") or {},
        "doc_hash": payload.get("doc_hash", ""),
        "tenant": payload.get("tenant") or DEFAULT_TENANT,
        "acl": payload.get("acl") or [],
    }


def payload_key(field: str) -> str:
    return field if field in TOP_LEVEL_FIELDS else f"metadata.{field}"


def _doc_condition(doc_id: str) -> qm.FieldCondition:
    return qm.FieldCondition(key="doc_id", match=qm.MatchValue(value=doc_id))


def docs_condition(doc_ids: list[str]) -> qm.FieldCondition:
    return qm.FieldCondition(key="doc_id", match=qm.MatchAny(any=list(doc_ids)))


def doc_filter(doc_id: str) -> qm.Filter:
    return qm.Filter(must=[_doc_condition(doc_id)])


def _match_value(value: Any) -> Any:
    # Filters allow whole-number floats (validate_filters); Qdrant matches ints.
    return int(value) if isinstance(value, float) else value


def metadata_filter(filters: Filters | None) -> qm.Filter | None:
    """``{field: value}`` → exact match (``doc_id`` and ``content_type`` on the chunk, any
    other field on its metadata); a list → any of the values; fields are ANDed. None when
    there is nothing to filter on."""
    if not filters:
        return None
    must: list[Any] = []
    for field, value in filters.items():
        key = payload_key(field)
        if not isinstance(value, list):
            must.append(qm.FieldCondition(key=key, match=qm.MatchValue(value=_match_value(value))))
            continue
        values = [_match_value(v) for v in value]
        if all(isinstance(v, str) for v in values) or all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            must.append(qm.FieldCondition(key=key, match=qm.MatchAny(any=values)))
        else:  # MatchAny takes only all-strings or all-ints; booleans and mixes need a should
            should = [qm.FieldCondition(key=key, match=qm.MatchValue(value=v)) for v in values]
            must.append(qm.Filter(should=should))
    return qm.Filter(must=must)


def access_conditions(access: Access | None, *, with_acl: bool = True) -> list[Any]:
    """Qdrant conditions (to AND) that admit only what ``access`` may see: its tenant (a point
    stored before tenants, without the field, belongs to ``default``) and, for a caller with
    groups, points without an ACL or sharing a group. ``with_acl=False``: the tenant only
    (writes are tenant-wide). None: no constraint (in-process callers such as eval)."""
    if access is None:
        return []
    tenant: Any = qm.FieldCondition(key="tenant", match=qm.MatchValue(value=access.tenant))
    if access.tenant == DEFAULT_TENANT:
        tenant = qm.Filter(should=[tenant, qm.IsEmptyCondition(
            is_empty=qm.PayloadField(key="tenant"))])
    conditions = [tenant]
    if with_acl and access.groups is not None:
        acl: list[Any] = [qm.IsEmptyCondition(is_empty=qm.PayloadField(key="acl"))]
        if access.groups:
            acl.append(qm.FieldCondition(key="acl", match=qm.MatchAny(any=list(access.groups))))
        conditions.append(qm.Filter(should=acl))
    return conditions


def scoped_filter(base: qm.Filter | None, access: Access | None, *,
                  with_acl: bool = True) -> qm.Filter | None:
    """``base`` (the caller's filters, a document's id) ANDed with the access conditions: the
    caller's filters can narrow what ``access`` admits, never widen it."""
    conditions = access_conditions(access, with_acl=with_acl)
    if not conditions:
        return base
    return qm.Filter(must=[*conditions, *([base] if base is not None else [])])
