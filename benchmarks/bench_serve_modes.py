"""Serve's own request path, no models: a FastAPI ingress calling one handle, over HTTP.

    .venv/bin/python benchmarks/bench_serve_modes.py                            # throughput mode
    RAGSERVE_SERVE_MODE=classic .venv/bin/python benchmarks/bench_serve_modes.py  # Python proxy

Prints requests/s at 1 and 16 concurrent clients (800 requests each) for the mode that
``graphs.serve_env`` sets, so the cost of Serve's hops can be told apart from the graph's work.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import SERVE_MODE, free_port  # noqa: E402  (sets Serve's environment)


def main() -> int:
    import ray
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()

    @serve.deployment
    class Double:
        async def run(self, x: int) -> int:
            return 2 * x

    @serve.deployment
    @serve.ingress(api)
    class Front:
        def __init__(self, double) -> None:
            self.double = double

        @api.get("/x")
        async def x(self) -> dict:
            return {"v": await self.double.run.remote(21)}

    port = free_port()
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    try:
        serve.run(Front.bind(Double.bind()), name="modes", route_prefix="/")

        async def load(clients: int, n: int = 800) -> float:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                async def worker() -> None:
                    for _ in range(n // clients):
                        (await c.get("/x")).raise_for_status()

                t = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(clients)))
                return n / (time.perf_counter() - t)

        asyncio.run(load(4, 100))  # warm
        for clients in (1, 16):
            print(f"Serve mode {SERVE_MODE}: {clients:2d} clients {asyncio.run(load(clients)):7.0f} req/s")
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
