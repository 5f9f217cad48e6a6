"""Who a request acts as, and what it may read: set by the guard, read by the layers that
enforce it (the access-controlled retriever, the indexer, cache keys, metering).

``Access`` is the constraint that crosses into the retriever stage (it pickles): a tenant and,
optionally, the groups whose documents the caller may read. Documents without an ACL are
visible to every caller of their tenant; a document with an ACL only to callers holding one of
its groups (or to tenant-wide callers, ``groups=None``).
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from ragserve.security.config import KeyLimits

__all__ = ["Access", "Principal", "DEFAULT_TENANT", "OPEN_PRINCIPAL", "OPERATION_SCOPES",
           "PRINCIPAL", "current_principal", "current_access", "bind_principal"]

DEFAULT_TENANT = "default"

# The edge's operations and the scope each needs; an operation not listed needs `admin`.
OPERATION_SCOPES: dict[str, str | None] = {
    "search": "search",
    "read_document": "search",
    "query": "query",
    "embeddings": "embeddings",
    "ingest": "ingest",
    "delete_document": "delete",
    "admin": "admin",
    "readiness": None,  # open, as /readyz
}


class Access(BaseModel):
    """The read constraint of one request, applied inside the retriever whatever filters the
    request carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = DEFAULT_TENANT
    groups: tuple[str, ...] | None = None
    """None: every document of the tenant; a tuple: documents without an ACL, or whose ACL
    shares a group with it."""

    def can_read(self, tenant: str | None, acl: list[str] | tuple[str, ...] | None) -> bool:
        """Whether a chunk stored with ``tenant`` and ``acl`` is visible (the rule every
        backend applies; a chunk stored before tenants existed belongs to ``default``)."""
        if (tenant or DEFAULT_TENANT) != self.tenant:
            return False
        return self.groups is None or not acl or bool(set(acl) & set(self.groups))

    def scope_key(self) -> str:
        """A short digest of the constraint: cached answers and sessions are keyed by it, so
        nothing cached under one permission set is served under another."""
        groups = "*" if self.groups is None else "\x1f".join(sorted(set(self.groups)))
        return hashlib.sha256(f"{self.tenant}\x00{groups}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Principal:
    """The caller the guard admitted: a key's id, tenant, scopes, groups and limits."""

    key_id: str
    tenant: str = DEFAULT_TENANT
    scopes: frozenset[str] = frozenset()
    acl_groups: tuple[str, ...] | None = None
    limits: KeyLimits | None = None
    expires_at: datetime | None = None
    source: str = "config"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def access(self) -> Access:
        return Access(tenant=self.tenant, groups=self.acl_groups)


OPEN_PRINCIPAL = Principal(key_id="anonymous", scopes=frozenset(OPERATION_SCOPES.values()) - {None},
                           source="open")
"""Who callers are when the service runs without keys (loopback only)."""

PRINCIPAL: ContextVar[Principal | None] = ContextVar("ragserve_principal", default=None)


def bind_principal(principal: Principal) -> None:
    """Set the request's principal (the guard does, in the request's own context)."""
    PRINCIPAL.set(principal)


def current_principal() -> Principal | None:
    return PRINCIPAL.get()


def current_access(*, required: bool) -> Access | None:
    """The request's read constraint. ``required`` (a layer that enforces it): with no
    principal bound — a code path that skipped the guard — ``PermissionError``, never an
    unconstrained read."""
    principal = PRINCIPAL.get()
    if principal is None:
        if required:
            raise PermissionError("no principal bound to this request (did it pass the guard?)")
        return None
    return principal.access
