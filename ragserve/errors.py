"""The one error hierarchy of ragserve.

Stages raise these; exactly one place (``ragserve.edge.errors``) maps them to HTTP. Anything else that
escapes a stage is a bug or an engine fault and becomes a 500 there, while Serve's health checks
see the fault in the replica.
"""

from __future__ import annotations

__all__ = [
    "RagServeError",
    "InvalidRequestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "StageUnavailableError",
    "StageTimeoutError",
    "ModelNotReadyError",
    "ConfigurationError",
]


class RagServeError(Exception):
    """Base class. ``status_code`` is the HTTP status the ingress answers with."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict:
        body: dict = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body

    def __reduce__(self):  # keep the message and details across Ray's pickling
        return (_rebuild, (type(self), self.message, self.details))


def _rebuild(cls: type[RagServeError], message: str, details: dict) -> RagServeError:
    return cls(message, details=details)


class InvalidRequestError(RagServeError):
    """The client sent something we will not process (400/422)."""

    status_code = 422
    code = "invalid_request"


class NotFoundError(RagServeError):
    status_code = 404
    code = "not_found"


class PayloadTooLargeError(RagServeError):
    status_code = 413
    code = "payload_too_large"


class StageUnavailableError(RagServeError):
    """A stage or its backing service cannot answer now; the client may retry (503)."""

    status_code = 503
    code = "stage_unavailable"


class StageTimeoutError(StageUnavailableError):
    code = "stage_timeout"


class ModelNotReadyError(StageUnavailableError):
    code = "model_not_ready"


class ConfigurationError(RagServeError):
    """The configuration cannot work (e.g. an index built with another embedding model).

    Raised at start-up so a misconfigured replica never serves traffic.
    """

    status_code = 500
    code = "configuration_error"
