"""API keys: made random, shown once, stored only as SHA-256 hashes, looked up in constant time.

A key is ``rsk_`` + 43 URL-safe characters (256 random bits). A high-entropy secret needs no
slow KDF: its SHA-256 is what is stored and compared (``hmac.compare_digest``). A presented key
is hashed whatever its shape, looked up by hash, and compared against a dummy when unknown, so
the work and the answer are the same for a malformed, unknown, expired or revoked key.

``KeyRing`` holds the configured keys and, when enabled, a run-time store (``MemoryKeyStore``
or ``RedisKeyStore``) for keys made through the admin routes. A replica caches what it looked
up in the store for ``cache_ttl_s``, so a revoked key stops working everywhere within that.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ragserve.security.access import Principal
from ragserve.security.config import ApiKeySpec, KeyLimits, KeyStoreConfig, check_writer

__all__ = ["KEY_PREFIX", "new_key", "hash_key", "KeyRecord", "KeyStore", "MemoryKeyStore",
           "RedisKeyStore", "KeyRing", "KeyStoreUnavailable"]

log = logging.getLogger("ragserve.security")

KEY_PREFIX = "rsk_"
_MIN_LEN, _MAX_LEN = 32, 256
_DUMMY_HASH = hashlib.sha256(b"ragserve-dummy-key").hexdigest()


def new_key() -> str:
    """A fresh key (shown once to whoever asked for it)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def well_formed(key: str | None) -> bool:
    return (key is not None and _MIN_LEN <= len(key) <= _MAX_LEN
            and key.isascii() and key.isprintable() and " " not in key)


class KeyRecord(BaseModel):
    """A key as stored: never the key itself."""

    model_config = ConfigDict(extra="ignore")

    id: str
    key_sha256: str = Field(repr=False)
    tenant: str
    scopes: list[str]
    acl_groups: list[str] | None = None
    expires_at: datetime | None = None
    limits: KeyLimits | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    revoked: bool = False
    source: str = "runtime"
    name: str | None = None

    def public(self) -> dict[str, Any]:
        """What a listing shows (no hash)."""
        return self.model_dump(mode="json", exclude={"key_sha256"})

    def principal(self) -> Principal:
        return Principal(key_id=self.id, tenant=self.tenant, scopes=frozenset(self.scopes),
                         acl_groups=tuple(self.acl_groups) if self.acl_groups is not None else None,
                         limits=self.limits, expires_at=self.expires_at, source=self.source)

    def usable(self, now: datetime) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > now)

    @classmethod
    def from_spec(cls, spec: ApiKeySpec) -> "KeyRecord":
        digest = spec.key_sha256 or hash_key(spec.key.resolve())  # type: ignore[union-attr]
        return cls(id=spec.id, key_sha256=digest, tenant=spec.tenant, scopes=list(spec.scopes),
                   acl_groups=spec.acl_groups, expires_at=spec.expires_at, limits=spec.limits,
                   source="config")


class KeyStoreUnavailable(Exception):
    """The run-time key store does not answer."""


class KeyStore(Protocol):
    async def by_hash(self, key_sha256: str) -> KeyRecord | None: ...
    async def by_id(self, key_id: str) -> KeyRecord | None: ...
    async def put(self, record: KeyRecord) -> None: ...
    async def replace(self, old: KeyRecord, new: KeyRecord) -> None: ...
    async def list(self, tenant: str | None) -> list[KeyRecord]: ...
    async def aclose(self) -> None: ...


class MemoryKeyStore:
    """Run-time keys in this replica's memory (one ingress replica; gone at restart)."""

    def __init__(self) -> None:
        self._by_id: dict[str, KeyRecord] = {}

    async def by_hash(self, key_sha256: str) -> KeyRecord | None:
        return next((r for r in self._by_id.values() if r.key_sha256 == key_sha256), None)

    async def by_id(self, key_id: str) -> KeyRecord | None:
        return self._by_id.get(key_id)

    async def put(self, record: KeyRecord) -> None:
        self._by_id[record.id] = record

    async def replace(self, old: KeyRecord, new: KeyRecord) -> None:
        self._by_id[new.id] = new

    async def list(self, tenant: str | None) -> list[KeyRecord]:
        return [r for r in self._by_id.values() if tenant is None or r.tenant == tenant]

    async def aclose(self) -> None:
        pass


class RedisKeyStore:
    """``{prefix}:h:{sha256}`` → record JSON (lookups), ``{prefix}:ids`` → hash of id → sha256."""

    def __init__(self, url: str, prefix: str, timeout_s: float = 0.5) -> None:
        import redis.asyncio as redis  # the cache tier's client; imported when configured

        self._redis = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                           socket_connect_timeout=timeout_s)
        self._prefix = prefix

    def _h(self, digest: str) -> str:
        return f"{self._prefix}:h:{digest}"

    async def _run(self, coro):
        try:
            return await coro
        except Exception as exc:  # noqa: BLE001 - any client failure is "store unavailable"
            raise KeyStoreUnavailable(type(exc).__name__) from None

    async def by_hash(self, key_sha256: str) -> KeyRecord | None:
        raw = await self._run(self._redis.get(self._h(key_sha256)))
        return KeyRecord.model_validate_json(raw) if raw else None

    async def by_id(self, key_id: str) -> KeyRecord | None:
        digest = await self._run(self._redis.hget(f"{self._prefix}:ids", key_id))
        return await self.by_hash(digest.decode()) if digest else None

    async def put(self, record: KeyRecord) -> None:
        async def write():
            async with self._redis.pipeline(transaction=True) as p:
                p.set(self._h(record.key_sha256), record.model_dump_json())
                p.hset(f"{self._prefix}:ids", record.id, record.key_sha256)
                await p.execute()
        await self._run(write())

    async def replace(self, old: KeyRecord, new: KeyRecord) -> None:
        async def write():
            async with self._redis.pipeline(transaction=True) as p:
                p.set(self._h(old.key_sha256), old.model_dump_json())
                p.set(self._h(new.key_sha256), new.model_dump_json())
                p.hset(f"{self._prefix}:ids", new.id, new.key_sha256)
                await p.execute()
        await self._run(write())

    async def list(self, tenant: str | None) -> list[KeyRecord]:
        ids = await self._run(self._redis.hgetall(f"{self._prefix}:ids"))
        if not ids:
            return []
        raws = await self._run(self._redis.mget([self._h(v.decode()) for v in ids.values()]))
        records = [KeyRecord.model_validate_json(r) for r in raws if r]
        return [r for r in records if tenant is None or r.tenant == tenant]

    async def aclose(self) -> None:
        try:
            await self._redis.aclose()
        except Exception:  # noqa: BLE001
            pass


class KeyRing:
    """Configured keys plus the run-time store; ``authenticate`` is the one lookup."""

    def __init__(self, configured: list[KeyRecord], store: KeyStore | None,
                 config: KeyStoreConfig | None = None, clock=time.monotonic) -> None:
        self.config = config or KeyStoreConfig()
        self._configured = {r.key_sha256: r for r in configured}
        self._configured_ids = {r.id for r in configured}
        self.store = store
        self._cache: dict[str, tuple[KeyRecord | None, float]] = {}
        self._clock = clock

    @classmethod
    def from_specs(cls, specs: list[ApiKeySpec], store: KeyStore | None,
                   config: KeyStoreConfig | None = None) -> "KeyRing":
        return cls([KeyRecord.from_spec(s) for s in specs], store, config)

    @property
    def empty(self) -> bool:
        return not self._configured

    async def _lookup(self, digest: str) -> KeyRecord | None:
        record = self._configured.get(digest)
        if record is not None or self.store is None:
            return record
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            record = await self.store.by_hash(digest)
        except KeyStoreUnavailable:
            if cached is not None:  # the last answer we had, rather than locking callers out
                return cached[0]
            raise
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (record, now + self.config.cache_ttl_s)
        return record

    async def authenticate(self, key: str | None) -> Principal | None:
        """The key's principal, or None for a missing, malformed, unknown, expired or revoked
        key (the same work and the same None for each). ``KeyStoreUnavailable`` when only the
        run-time store could tell and it does not answer."""
        presented = key if well_formed(key) else ""
        digest = hash_key(presented)
        record = await self._lookup(digest) if presented else None
        stored = record.key_sha256 if record is not None else _DUMMY_HASH
        same = hmac.compare_digest(stored.encode(), digest.encode())
        if record is None or not same or not record.usable(datetime.now(timezone.utc)):
            return None
        return record.principal()

    def configured(self, key_id: str) -> KeyRecord | None:
        return next((r for r in self._configured.values() if r.id == key_id), None)

    # ------------------------------------------------------------------ administration

    def _need_store(self) -> KeyStore:
        if self.store is None:
            from ragserve.errors import InvalidRequestError
            raise InvalidRequestError("run-time keys are off: they need security.keys configured "
                                      "and security.runtime_keys on")
        return self.store

    async def create(self, *, tenant: str, scopes: list[str], acl_groups: list[str] | None,
                     expires_at: datetime | None, limits: KeyLimits | None,
                     name: str | None) -> tuple[str, KeyRecord]:
        store = self._need_store()
        key_id = "k_" + secrets.token_hex(8)
        check_writer(scopes, acl_groups, key_id)
        key = new_key()
        record = KeyRecord(id=key_id, key_sha256=hash_key(key), tenant=tenant, scopes=scopes,
                           acl_groups=acl_groups, expires_at=expires_at, limits=limits, name=name)
        await store.put(record)
        return key, record

    async def list(self, tenant: str | None) -> list[KeyRecord]:
        configured = [r for r in self._configured.values() if tenant is None or r.tenant == tenant]
        runtime = await self.store.list(tenant) if self.store is not None else []
        return sorted([*configured, *runtime], key=lambda r: r.id)

    async def _runtime(self, key_id: str, tenant: str | None) -> KeyRecord | None:
        record = await self._need_store().by_id(key_id)
        if record is None or (tenant is not None and record.tenant != tenant):
            return None
        return record

    async def revoke(self, key_id: str, tenant: str | None) -> KeyRecord | None:
        """The revoked record; None when no run-time key of the tenant has that id
        (configured keys are revoked by removing them from the config)."""
        record = await self._runtime(key_id, tenant)
        if record is None:
            return None
        revoked = record.model_copy(update={"revoked": True})
        await self._need_store().replace(revoked, revoked)
        self._cache.pop(record.key_sha256, None)
        return revoked

    async def rotate(self, key_id: str, tenant: str | None) -> tuple[str, KeyRecord] | None:
        """A new secret for the same id and attributes; the old secret stops working."""
        record = await self._runtime(key_id, tenant)
        if record is None or record.revoked:
            return None
        key = new_key()
        new = record.model_copy(update={"key_sha256": hash_key(key),
                                        "created_at": datetime.now(timezone.utc)})
        old = record.model_copy(update={"revoked": True})
        await self._need_store().replace(old, new)
        self._cache.pop(record.key_sha256, None)
        return key, new

    async def aclose(self) -> None:
        if self.store is not None:
            await self.store.aclose()

