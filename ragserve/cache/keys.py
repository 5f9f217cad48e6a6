"""Cache keys: hashes of normalised text and parameters, never the text itself."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

from ragserve.security.access import current_access

__all__ = ["normalise_text", "digest", "KeySpace", "access_scope"]


def access_scope() -> str:
    """The request's permission set (tenant and ACL groups) as a short digest; "" when no
    principal is bound (in-process callers). Query results and sessions are keyed by it, so a
    cached answer or a conversation never crosses a permission boundary; embeddings are
    content-addressed and stay shared."""
    access = current_access(required=False)
    return access.scope_key() if access is not None else ""


def normalise_text(text: str) -> str:
    """What counts as "the same text" for caching: NFKC, whitespace collapsed, stripped.

    Case is kept: cased models embed "Apple" and "apple" differently.
    """
    return " ".join(unicodedata.normalize("NFKC", text).split())


def digest(value: Any) -> str:
    """A stable SHA-256 hex digest of a string or of a JSON-serialisable value."""
    if not isinstance(value, str):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class KeySpace:
    """Key layout under one prefix (``ragserve`` by default), one namespace per tier.

    - ``{p}:emb:v1:{model}:{kind}:{sha256(text)}`` → float32 vector bytes
    - ``{p}:q:v1:{sha256(request + pipeline + index version + access scope)}`` → response JSON
    - ``{p}:index-version`` → integer advanced by every ingest and delete
    - ``{p}:lock:{query key}`` → single-flight lock across replicas
    - ``{p}:sess:{sha256(access scope + session id)}`` → session turns
    """

    def __init__(self, prefix: str = "ragserve") -> None:
        self.prefix = prefix

    def embedding(self, model_id: str, kind: str, text: str) -> str:
        return f"{self.prefix}:emb:v1:{digest(model_id)[:16]}:{kind}:{digest(normalise_text(text))}"

    @property
    def index_version(self) -> str:
        return f"{self.prefix}:index-version"

    def query(self, parts: dict[str, Any]) -> str:
        scope = access_scope()
        return f"{self.prefix}:q:v1:{digest({**parts, 'access': scope} if scope else parts)}"

    def lock(self, query_key: str) -> str:
        return f"{self.prefix}:lock:{query_key.rsplit(':', 1)[-1]}"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}:sess:{digest(scoped_session(session_id))[:32]}"


def scoped_session(session_id: str) -> str:
    """The session id within the caller's permission set: the same id sent by two tenants (or
    two ACL sets) names two conversations."""
    scope = access_scope()
    return f"{scope}\x00{session_id}" if scope else session_id
