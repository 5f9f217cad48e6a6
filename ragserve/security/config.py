"""Settings of the security layer: ``ingress.config.security`` in ``RagAppArgs``.

Secrets never sit in a YAML file: a ``SecretRef`` names where the value is read from — an
environment variable (``{env: RAGSERVE_ADMIN_KEY}``), a file (``{file: /etc/ragserve/keys/admin}``,
what a Kubernetes Secret mounted as a volume gives), or, for tests, the value itself
(``{value: ...}``). It is resolved when the ingress replica starts (``resolve()``), never at
import time, and the resolved value is hashed and dropped.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["Scope", "SCOPES", "SecretRef", "KeyLimits", "ApiKeySpec", "RateLimitConfig",
           "KeyStoreConfig", "AuditConfig", "SecurityConfig"]

Scope = Literal["search", "query", "ingest", "delete", "embeddings", "admin"]
SCOPES: tuple[str, ...] = ("search", "query", "ingest", "delete", "embeddings", "admin")
WRITE_SCOPES = frozenset({"ingest", "delete"})
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class SecretRef(_Strict):
    """Where a secret is read from: exactly one of ``env``, ``file`` or ``value``."""

    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                            description="Name of an environment variable holding the secret.")
    file: str | None = Field(
        default=None, description="Path of a file holding the secret (surrounding whitespace "
        "is stripped), e.g. a Kubernetes Secret mounted as a volume.")
    value: SecretStr | None = Field(
        default=None, description="The secret itself (tests and local experiments only).")

    @model_validator(mode="after")
    def _exactly_one(self) -> "SecretRef":
        if sum(x is not None for x in (self.env, self.file, self.value)) != 1:
            raise ValueError("a secret reference needs exactly one of env, file or value")
        return self

    def where(self) -> str:
        """A description safe to log (never the value)."""
        return f"env {self.env}" if self.env else f"file {self.file}" if self.file else "value"

    def resolve(self) -> str:
        """The secret; ``ValueError`` naming the source when it is missing or empty."""
        if self.value is not None:
            secret = self.value.get_secret_value()
        elif self.env is not None:
            secret = os.environ.get(self.env, "")
        else:
            try:
                secret = Path(self.file or "").expanduser().read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read the secret from {self.where()}: "
                                 f"{type(exc).__name__}") from None
        secret = secret.strip()
        if not secret:
            raise ValueError(f"the secret from {self.where()} is empty or not set")
        return secret


class KeyLimits(_Strict):
    """One key's budgets; None: unlimited."""

    requests_per_minute: int | None = Field(default=None, ge=1, description="Requests per minute.")
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Tokens per minute (answers' prompt + completion "
        "tokens, embedded and reranked text), charged after each request by actual usage.")
    tokens_per_day: int | None = Field(default=None, ge=1, description="Tokens per day.")


class ApiKeySpec(_Strict):
    """A key declared in the Serve config. Its secret is ``key`` (a reference: resolved and
    hashed at start-up) or already ``key_sha256`` (hex SHA-256 of the key, so the config holds
    no secret at all; ``ragserve keys new`` prints both)."""

    id: str = Field(pattern=_ID, description="Key id: safe to log, shown in lists and audit records.")
    key: SecretRef | None = Field(default=None, description="Where the key is read from.")
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                                   description="Hex SHA-256 of the key (instead of `key`).")
    tenant: str = Field(default="default", pattern=_ID,
                        description="The tenant whose documents the key reads and writes.")
    scopes: list[Scope] = Field(min_length=1, description="What the key may do.")
    acl_groups: list[str] | None = Field(
        default=None, description="Groups the key belongs to: it reads documents without an "
        "ACL and those whose ACL names one of these. None: every document of its tenant. A "
        "key with groups cannot write (ingest, delete): writers are tenant-wide.")
    expires_at: datetime | None = Field(default=None, description="Expiry (UTC when no zone).")
    limits: KeyLimits | None = Field(
        default=None, description="The key's own limits (None: `rate_limits.default`).")

    @model_validator(mode="after")
    def _one_secret_and_no_restricted_writer(self) -> "ApiKeySpec":
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError(f"key {self.id!r}: set exactly one of key or key_sha256")
        check_writer(self.scopes, self.acl_groups, self.id)
        return self

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return v.replace(tzinfo=timezone.utc) if v is not None and v.tzinfo is None else v


def check_writer(scopes: list[str], acl_groups: list[str] | None, key_id: str) -> None:
    if acl_groups is not None and WRITE_SCOPES & set(scopes):
        raise ValueError(f"key {key_id!r}: a key with acl_groups cannot have the ingest or "
                         "delete scope (writers are tenant-wide; ACL groups restrict reading)")


class RateLimitConfig(_Strict):
    """Per-key limits with the ``limits`` package (moving window). With a ``redis_url`` every
    ingress replica shares the counters; when Redis does not answer, each replica counts on
    its own (a local moving window) until it answers again: limits loosen by at most the
    replica count for that time, and no request fails for it."""

    enabled: bool = Field(default=True, description="Enforce the keys' limits.")
    default: KeyLimits = Field(
        default_factory=lambda: KeyLimits(requests_per_minute=600),
        description="Limits of keys that set none.")
    redis_url: SecretStr | None = Field(
        default=None, description="redis:// or rediss:// (TLS) URL shared by every replica; "
        "None: the cache's redis_url, else in-process counters (one replica).")
    timeout_s: float = Field(default=0.25, gt=0, description="Budget of one Redis call.")
    retry_after_redis_s: float = Field(
        default=5.0, gt=0, description="After a Redis failure, count locally this long.")


class KeyStoreConfig(_Strict):
    """Keys created at run time (admin routes): in Redis when a URL is known, else in the
    replica's memory (one ingress replica; lost at restart)."""

    redis_url: SecretStr | None = Field(
        default=None, description="redis:// or rediss:// URL; None: the cache's redis_url.")
    cache_ttl_s: float = Field(
        default=2.0, gt=0, le=30, description="A replica trusts a looked-up key this long: "
        "a revoked key stops working on every replica within this time.")
    prefix: str = Field(default="ragserve:keys", description="Redis key prefix.")


class AuditConfig(_Strict):
    """The audit log of retrievals: one JSON line per request that returned chunks (key id,
    tenant, operation, chunk ids, time), apart from the service log."""

    enabled: bool = Field(default=True, description="Write audit records.")
    path: str | None = Field(
        default=None, description="File the records are appended to; None: the "
        "`ragserve.audit` logger only (which does not propagate to the service log).")


class SecurityConfig(_Strict):
    """Authentication, scopes, tenants, limits and audit (``docs/security.md``).

    Without ``keys`` (and no run-time key store) the service is open: every caller acts as
    tenant ``default`` with every scope. That is allowed on a loopback address only, and the
    ingress says so at start-up; ``require_keys`` (``configs/cluster.yaml``) refuses to start
    without keys."""

    keys: list[ApiKeySpec] = Field(default_factory=list, description="Keys from the config.")
    require_keys: bool = Field(
        default=False, description="Refuse to start without at least one configured key.")
    runtime_keys: bool = Field(
        default=True, description="Admin routes create, list, revoke and rotate keys.")
    key_store: KeyStoreConfig = Field(default_factory=KeyStoreConfig,
                                      description="Where run-time keys live.")
    handle_principal: str | None = Field(
        default=None, description="Id of a configured key that handle calls without "
        "credentials act as (trusted in-cluster callers: other deployments, notebooks on the "
        "cluster). None: handle calls present a key like HTTP callers.")
    rate_limits: RateLimitConfig = Field(default_factory=RateLimitConfig,
                                         description="Per-key request and token limits.")
    audit: AuditConfig = Field(default_factory=AuditConfig, description="The audit log.")

    @model_validator(mode="after")
    def _consistent(self) -> "SecurityConfig":
        ids = [k.id for k in self.keys]
        if len(ids) != len(set(ids)):
            raise ValueError("security.keys: key ids repeat")
        if self.require_keys and not self.keys:
            raise ValueError(
                "security.require_keys is set but security.keys is empty: add a key, e.g. "
                "`keys: [{id: admin, scopes: [admin, search, query, ingest, delete, "
                "embeddings], key: {env: RAGSERVE_ADMIN_KEY}}]` with the key from "
                "`ragserve keys new` in that variable (or a Kubernetes Secret, k8s/README.md)")
        if self.handle_principal is not None and self.handle_principal not in ids:
            raise ValueError(f"security.handle_principal {self.handle_principal!r} is not the "
                             "id of a key in security.keys")
        return self

    @property
    def open(self) -> bool:
        """No keys configured: the service runs without authentication."""
        return not self.keys


def redis_url_with_password(url: SecretStr | None, password: SecretRef | None) -> str | None:
    """``url`` with ``password`` (resolved now: call at start-up, never at import) put in as
    its password; ``url`` unchanged without one. ``rediss://`` (TLS) keeps its scheme."""
    if url is None:
        return None
    raw = url.get_secret_value()
    if password is None:
        return raw
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(raw)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:{quote(password.resolve(), safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
