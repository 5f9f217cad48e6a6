"""Admin routes for run-time API keys (scope ``admin``): create, list, revoke, rotate.

An admin key manages the keys of its own tenant. A new or rotated key is in the response
once and never again (only its SHA-256 is stored). Keys live in Redis when one is configured
(every ingress replica sees them; a revocation reaches every replica within
``security.key_store.cache_ttl_s``), else in the replica's memory. Configured keys are listed
but changed only in the config.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ragserve.edge.context import RequestContext
from ragserve.edge.errors import ERROR_RESPONSES
from ragserve.errors import InvalidRequestError, NotFoundError
from ragserve.security.access import current_principal
from ragserve.security.config import KeyLimits, Scope
from ragserve.security.keys import KeyRing

__all__ = ["admin_router", "KeyCreate", "KeyInfo", "NewKey", "KeyList"]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scopes: list[Scope] = Field(min_length=1, description="What the key may do.")
    acl_groups: list[str] | None = Field(
        default=None, max_length=32, description="Groups of the key (None: every document of "
        "the tenant). A key with groups cannot have ingest or delete.")
    expires_at: datetime | None = Field(default=None, description="Expiry (UTC).")
    limits: KeyLimits | None = Field(default=None, description="Its own limits.")
    name: str | None = Field(default=None, max_length=100, description="A label for people.")


class KeyInfo(BaseModel):
    id: str = Field(description="Key id (safe to log).")
    tenant: str = Field(description="Its tenant.")
    scopes: list[str] = Field(description="Its scopes.")
    acl_groups: list[str] | None = Field(default=None, description="Its ACL groups.")
    expires_at: datetime | None = Field(default=None, description="Expiry.")
    limits: KeyLimits | None = Field(default=None, description="Its own limits.")
    created_at: datetime = Field(description="When it was made (or last rotated).")
    revoked: bool = Field(description="Revoked keys stay listed.")
    source: str = Field(description="'config' or 'runtime'.")
    name: str | None = Field(default=None, description="Its label.")


class NewKey(BaseModel):
    key: str = Field(description="The key: shown this once, never stored.")
    info: KeyInfo = Field(description="The key's record.")


class KeyList(BaseModel):
    keys: list[KeyInfo] = Field(description="Keys of the caller's tenant.")


def admin_router(ring: KeyRing, admitted: Callable[[str], Any]) -> APIRouter:
    router = APIRouter(prefix="/v1/admin/keys", tags=["admin"], responses=ERROR_RESPONSES)

    def tenant() -> str:
        principal = current_principal()
        assert principal is not None  # the guard bound it
        return principal.tenant

    @router.post("", response_model=NewKey, status_code=201, summary="Create a key (shown once).")
    async def create(req: KeyCreate, _: RequestContext = admitted("admin")) -> NewKey:
        try:
            key, record = await ring.create(
                tenant=tenant(), scopes=list(req.scopes), acl_groups=req.acl_groups,
                expires_at=req.expires_at, limits=req.limits, name=req.name)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
        return NewKey(key=key, info=KeyInfo(**record.public()))

    @router.get("", response_model=KeyList, summary="The tenant's keys (never the keys).")
    async def list_keys(_: RequestContext = admitted("admin")) -> KeyList:
        return KeyList(keys=[KeyInfo(**r.public()) for r in await ring.list(tenant())])

    @router.delete("/{key_id}", response_model=KeyInfo, summary="Revoke a run-time key.")
    async def revoke(key_id: str, _: RequestContext = admitted("admin")) -> KeyInfo:
        record = await ring.revoke(key_id, tenant())
        if record is None:
            raise NotFoundError("no run-time key with that id in this tenant")
        return KeyInfo(**record.public())

    @router.post("/{key_id}/rotate", response_model=NewKey,
                 summary="A new secret for a run-time key; the old one stops working.")
    async def rotate(key_id: str, _: RequestContext = admitted("admin")) -> NewKey:
        result = await ring.rotate(key_id, tenant())
        if result is None:
            raise NotFoundError("no active run-time key with that id in this tenant")
        key, record = result
        return NewKey(key=key, info=KeyInfo(**record.public()))

    return router
