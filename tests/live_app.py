"""The ASGI app over in-process fakes, served by a real uvicorn on a loopback port: real clients
(the OpenAI SDK, LangChain, a browser) talk HTTP to it without Ray or models."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import httpx
import uvicorn

from ragserve.cache import CacheLayer
from ragserve.config import CacheConfig, IngressConfig
from ragserve.edge import Guard, create_app
from ragserve.pipeline import RAGPipeline, StageSet
from scripts.local_ray import free_port
from tests.corpus import DOCUMENTS
from tests.fakes import FakeEmbedder, FakeGenerator, FakeReranker, MemoryRetriever

__all__ = ["MODEL", "fake_service", "serve_asgi", "live_fake_app"]

MODEL = "ragserve-test"


def fake_service(generator: Any = None, reranker: Any = None):
    """A ``CachedPipeline`` (the ingress's service) over fakes, started."""
    stages = StageSet(embedder=FakeEmbedder(dimension=8), retriever=MemoryRetriever(),
                      reranker=reranker or FakeReranker(),
                      generator=generator if generator is not None else FakeGenerator())
    config = IngressConfig()
    layer = CacheLayer.from_config(CacheConfig())
    stages.embedder = layer.embedder(stages.embedder)
    service = layer.pipeline(RAGPipeline(stages, config=config), fingerprint="test")
    asyncio.run(service.startup())  # the fakes hold nothing bound to this loop
    return service


@contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Run ``app`` on uvicorn in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def live_fake_app(guard: Guard | None = None, ingest: bool = True, **service_kwargs: Any
                  ) -> Iterator[tuple[str, Any]]:
    """``(base_url, service)``: the app over fakes on uvicorn, the test corpus ingested."""
    service = fake_service(**service_kwargs)
    app = create_app(lambda: service, guard=guard, model_name=MODEL)
    with serve_asgi(app) as url:
        if ingest:
            r = httpx.post(f"{url}/v1/documents", json={"documents": DOCUMENTS}, timeout=30)
            r.raise_for_status()
        yield url, service
