"""ASGI middleware of the edge: request ids and the body limit.

- ``X-Request-ID``: taken from the request when it is a safe token, else made; set for the
  request's context (``REQUEST_ID``) and returned on every response.
- Body limit: a declared ``Content-Length`` over the limit is refused at once (413); a body
  without one (chunked) is counted as it arrives and refused once it passes the limit, so the
  limit bounds what the service ever buffers.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragserve.edge.context import REQUEST_ID, request_id_from
from ragserve.observability.service import HttpObserver

__all__ = ["EdgeMiddleware"]


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int,
                 observer: HttpObserver | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Metrics, the ingress span and the request log record (ragserve.observability).
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = request_id_from(headers.get(b"x-request-id", b"").decode("latin-1") or None)
        token = REQUEST_ID.set(rid)
        observed = (self.observer.begin(scope.get("method", ""), scope.get("path", ""), headers)
                    if self.observer is not None else None)
        status = 500  # unless a response starts: an exception escaping the app is a 500
        try:
            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"x-request-id", rid.encode())]}
                await send(message)

            limit = self.max_body_bytes
            declared = headers.get(b"content-length", b"").decode("latin-1")
            if declared.isdigit() and int(declared) > limit:
                await _too_large(send_with_id, f"request body is {int(declared)} bytes; "
                                               f"the limit is {limit}", rid,
                                 {"limit": limit, "size": int(declared)})
                return
            ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip()
            if (scope.get("method") in ("POST", "PUT", "PATCH") and ctype
                    and str(scope.get("path", "")).startswith("/v1/") and not _is_json(ctype)):
                # The API reads JSON only: a text/plain or form body is refused, not guessed at.
                await _send_error(send_with_id, 415, "unsupported_media_type",
                                  f"the body must be JSON (Content-Type: application/json), "
                                  f"not {ctype[:100]}", rid, {"content_type": ctype[:100]})
                return
            received = 0

            async def counted_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        # An HTTPException passes FastAPI's body parsing unchanged (anything
                        # else becomes a 400 there); the edge's handler maps it to 413.
                        raise StarletteHTTPException(
                            413, f"request body is over the limit of {limit} bytes")
                return message

            await self.app(scope, counted_receive, send_with_id)
        finally:
            if observed is not None:
                route = scope.get("route")
                self.observer.end(observed, method=scope.get("method", ""),
                                  path=scope.get("path", ""),
                                  template=getattr(route, "path", None), status=status)
            REQUEST_ID.reset(token)


def _is_json(ctype: str) -> bool:
    ctype = ctype.lower()
    return ctype == "application/json" or (ctype.startswith("application/")
                                           and ctype.endswith("+json"))


async def _too_large(send: Send, message: str, rid: str, details: dict) -> None:
    await _send_error(send, 413, "payload_too_large", message, rid, details)


async def _send_error(send: Send, status: int, code: str, message: str, rid: str,
                      details: dict) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": details,
                                 "request_id": rid}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
