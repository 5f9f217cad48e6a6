"""Authentication, scopes and limits as one check of the edge's ``Guard``, and the
``SecurityLayer`` that the ingress composes from ``SecurityConfig``.

The check, per request (HTTP route or handle method alike):

1. the operation's scope (``OPERATION_SCOPES``; an operation not listed needs ``admin``, so a
   new route is closed until mapped; ``readiness`` needs none);
2. the principal: with no keys configured, ``OPEN_PRINCIPAL`` (loopback only, see
   ``check_exposure``); a handle call without credentials acts as
   ``security.handle_principal`` when one is configured; otherwise the bearer key —
   missing, malformed, unknown, expired or revoked are one 401 with one message;
3. the scope (403 naming the scope, never the key);
4. the key's request budget (429 with ``Retry-After`` and ``RateLimit-*``).

The admitted principal is bound to the request's context: the access-controlled retriever,
the indexer, the cache keys and the metering read it there.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from ragserve.errors import ConfigurationError, StageUnavailableError
from ragserve.security.access import OPEN_PRINCIPAL, OPERATION_SCOPES, Principal, bind_principal
from ragserve.security.audit import AuditLog
from ragserve.security.config import SecurityConfig
from ragserve.security.errors import AuthenticationError, PermissionDeniedError
from ragserve.security.keys import KeyRing, KeyStoreUnavailable, MemoryKeyStore, RedisKeyStore
from ragserve.security.ratelimit import KeyLimiter

__all__ = ["AuthCheck", "SecurityLayer", "check_exposure", "is_loopback"]

log = logging.getLogger("ragserve.security")


class AuthCheck:
    """A ``Guard`` check (``async (ctx) -> None``)."""

    def __init__(self, ring: KeyRing, *, open_mode: bool,
                 handle_principal: Principal | None = None,
                 limiter: KeyLimiter | None = None) -> None:
        self.ring = ring
        self.open_mode = open_mode
        self.handle_principal = handle_principal
        self.limiter = limiter

    async def __call__(self, ctx: Any) -> None:
        scope = OPERATION_SCOPES.get(ctx.operation, "admin")
        if scope is None:
            return
        principal = await self._principal(ctx)
        if scope not in principal.scopes:
            raise PermissionDeniedError(f"this key does not have the {scope!r} scope")
        ctx.principal = principal.key_id
        if hasattr(ctx, "tenant"):
            ctx.tenant = principal.tenant
        bind_principal(principal)
        if self.limiter is not None and not self.open_mode:
            headers = await self.limiter.admit(principal)
            if headers and hasattr(ctx, "response_headers"):
                ctx.response_headers.update(headers)

    async def _principal(self, ctx: Any) -> Principal:
        if self.open_mode:
            return OPEN_PRINCIPAL
        if (ctx.transport == "handle" and ctx.credentials is None
                and self.handle_principal is not None):
            return self.handle_principal
        try:
            principal = await self.ring.authenticate(ctx.credentials)
        except KeyStoreUnavailable:
            raise StageUnavailableError("the key store is unavailable; retry shortly") from None
        if principal is None:
            raise AuthenticationError()
        return principal


def is_loopback(host: str | None) -> bool:
    if not host or host == "localhost":
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(config: SecurityConfig, host: str | None) -> str:
    """The start-up verdict on running with these keys on ``host``: a line to log, or
    ``ConfigurationError`` (with the fix) when the service would be open beyond loopback."""
    if not config.open:
        return f"API keys required ({len(config.keys)} configured)"
    if host is not None and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve without API keys on {host}, beyond loopback: anyone who reaches "
            "the port could read, overwrite and delete every document. Add a key to "
            "ingress.config.security.keys (e.g. `{id: admin, scopes: [admin, search, query, "
            "ingest, delete, embeddings], key: {env: RAGSERVE_ADMIN_KEY}}` with a key from "
            "`ragserve keys new`), or bind to 127.0.0.1 (http_options.host).")
    return ("OPEN: no API keys configured — every caller on this machine acts as tenant "
            "'default' with every scope (loopback only; docs/security.md shows how to add keys)")


class SecurityLayer:
    """What the ingress composes: the guard check, the retriever's access filter, metering."""

    def __init__(self, config: SecurityConfig, *, redis_url: str | None = None) -> None:
        self.config = config
        store_url = (config.key_store.redis_url.get_secret_value()
                     if config.key_store.redis_url else redis_url)
        store = None
        if config.runtime_keys and not config.open:
            store = (RedisKeyStore(store_url, config.key_store.prefix) if store_url
                     else MemoryKeyStore())
        try:
            self.ring = KeyRing.from_specs(config.keys, store, config.key_store)
        except ValueError as exc:
            raise ConfigurationError(f"security.keys: {exc}") from None
        limits_url = (config.rate_limits.redis_url.get_secret_value()
                      if config.rate_limits.redis_url else redis_url)
        self.limiter = (KeyLimiter(config.rate_limits, limits_url)
                        if config.rate_limits.enabled and not config.open else None)
        self.audit = AuditLog(config.audit)
        handle = self.ring.configured(config.handle_principal) if config.handle_principal else None
        self.check = AuthCheck(self.ring, open_mode=config.open,
                               handle_principal=handle.principal() if handle else None,
                               limiter=self.limiter)

    @property
    def open(self) -> bool:
        return self.config.open

    def retriever(self, inner: Any) -> Any:
        from ragserve.security.retriever import AccessControlledRetriever
        return AccessControlledRetriever(inner, self.audit)

    def service(self, inner: Any) -> Any:
        from ragserve.security.metering import MeteredService
        return MeteredService(inner, self.limiter) if self.limiter is not None else inner

    async def aclose(self) -> None:
        await self.ring.aclose()
