"""The playground: one static page (HTML and JavaScript, no build step) served by the ingress at
``GET /playground``. It calls the public API from the browser (``/v1/query`` streamed,
``/v1/documents``), so it shows what any client gets: the answer as it streams, each
citation's passage and source, per-stage timings, the cache result and the generator backend.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ["playground_router", "PAGE"]

PAGE = Path(__file__).with_name("index.html")


@lru_cache(maxsize=1)
def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


def playground_router() -> APIRouter:
    router = APIRouter(tags=["playground"])

    @router.get("/playground", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> HTMLResponse:
        # The page holds no secret (an API key is typed into it and kept in the tab only).
        return HTMLResponse(_page(), headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                       "style-src 'unsafe-inline'; connect-src 'self'",
        })

    return router
