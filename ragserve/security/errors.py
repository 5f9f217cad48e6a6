"""The security layer's refusals, in the one error hierarchy (the edge maps them to HTTP).

Messages are fixed strings: nothing in a 401 tells a malformed key from an unknown, expired or
revoked one, and nothing in any of them repeats what the caller sent."""

from __future__ import annotations

from ragserve.errors import RagServeError

__all__ = ["AuthenticationError", "PermissionDeniedError", "RateLimitedError"]


class AuthenticationError(RagServeError):
    """401: no usable key (missing, malformed, unknown, expired or revoked — never said which)."""

    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "a valid API key is required: "
                 "Authorization: Bearer <key>", *, details: dict | None = None) -> None:
        super().__init__(message, details=details)
        self.headers = {"WWW-Authenticate": 'Bearer realm="ragserve"'}


class PermissionDeniedError(RagServeError):
    """403: a valid key without the scope the operation needs."""

    status_code = 403
    code = "forbidden"


class RateLimitedError(RagServeError):
    """429 with ``Retry-After`` and ``RateLimit-*`` headers."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, headers: dict[str, str],
                 details: dict | None = None) -> None:
        super().__init__(message, details=details)
        self.headers = headers
