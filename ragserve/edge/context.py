"""Who is asking, for what, under which request id — for one request, HTTP or handle."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Operation", "Transport", "RequestContext", "REQUEST_ID", "request_id_from"]

Operation = Literal["search", "query", "embeddings", "ingest", "read_document",
                    "delete_document", "readiness", "admin"]
"""What a request does; auth scopes and limits are decided per operation."""

Transport = Literal["http", "handle"]

REQUEST_ID: ContextVar[str | None] = ContextVar("ragserve_request_id", default=None)
"""The current request's id, for log records and error bodies."""

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_from(value: str | None) -> str:
    """The caller's ``X-Request-ID`` when it is a safe token, else a fresh one (a header is
    echoed into logs and responses: anything else could inject into them)."""
    if value and _SAFE_ID.match(value):
        return value
    return uuid.uuid4().hex


@dataclass
class RequestContext:
    request_id: str
    operation: Operation
    transport: Transport
    credentials: str | None = field(default=None, repr=False)
    """The presented credential (an API key), never logged; checks read it."""
    principal: str | None = None
    """Who the checks established the caller to be (a key id), when they did."""
    tenant: str | None = None
    """The principal's tenant, when a check established one."""
    response_headers: dict[str, str] = field(default_factory=dict)
    """Headers the checks want on the response (``RateLimit-*``)."""
