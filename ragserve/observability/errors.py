"""Error tracking with sentry-sdk, when a DSN is configured — with personal data kept out.

``send_default_pii`` is off (no IPs, cookies, users), and ``scrub`` (the ``before_send``
hook) drops what an event could still carry of a request: bodies, query strings, cookies,
headers other than a short allow-list, local variables of frames, and breadcrumb messages.
"""

from __future__ import annotations

from typing import Any

from ragserve.config import SentryConfig

__all__ = ["configure_sentry", "scrub"]

_SAFE_HEADERS = {"content-type", "content-length", "user-agent", "x-request-id", "traceparent"}


def scrub(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    request = event.get("request")
    if isinstance(request, dict):
        for key in ("data", "query_string", "cookies", "env"):
            request.pop(key, None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {k: v for k, v in headers.items()
                                  if k.lower() in _SAFE_HEADERS}
    for exc in (event.get("exception") or {}).get("values") or []:
        for frame in (exc.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    crumbs = event.get("breadcrumbs")
    if isinstance(crumbs, dict):
        for crumb in crumbs.get("values") or []:
            crumb.pop("data", None)
            if crumb.get("category") != "ragserve":
                crumb.pop("message", None)
    event.pop("user", None)
    return event


def configure_sentry(config: SentryConfig, *, component: str, release: str | None = None) -> bool:
    """Start sentry-sdk in this process when ``config.dsn`` is set; returns whether it did."""
    if config.dsn is None:
        return False
    import sentry_sdk

    sentry_sdk.init(
        dsn=config.dsn.get_secret_value(),
        environment=config.environment,
        release=release,
        sample_rate=config.sample_rate,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        traces_sample_rate=0.0,  # traces go through OpenTelemetry
        before_send=scrub,
    )
    sentry_sdk.set_tag("component", component)
    return True
