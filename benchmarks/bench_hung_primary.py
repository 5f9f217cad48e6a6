"""The generator chain with a primary that accepts calls and never answers (tests/llm_server.py
in "hang" mode, a real process): how long the first request after the fault takes, and the
slowest request while the breaker re-probes.

    .venv/bin/python -m benchmarks.bench_hung_primary
"""

from __future__ import annotations

import asyncio
import json
import time

from ragserve.config import GeneratorConfig
from ragserve.generation.factory import build_generation_chain
from ragserve.schemas import GenerationRequest, ScoredChunk
from tests.conftest import LLMServer

REQUEST = GenerationRequest(query="How often does the espresso machine need descaling?",
                            max_tokens=32, passages=[ScoredChunk(
                                chunk_id="c1", doc_id="coffee", chunk_index=0, score=1.0,
                                text="The espresso machine needs descaling every two weeks.")])


def chain(server: LLMServer, **config):
    gen = build_generation_chain(GeneratorConfig.model_validate({
        "backend": {"backend": "openai", "base_url": server.base_url, "model": "m",
                    "timeout_s": config.pop("timeout_s")},
        "fallbacks": [{"backend": "extractive"}], **config}))
    gen.warm_up()
    return gen


async def first_request(server: LLMServer, **config) -> dict:
    gen = chain(server, **config)
    t0 = time.perf_counter()
    result = await gen.generate(REQUEST)
    return {"config": config, "first_request_s": round(time.perf_counter() - t0, 2),
            "answered_by": result.backend,
            "attempts": [(a.backend, a.outcome, a.reason, a.tries) for a in result.attempts]}


async def while_reprobing(server: LLMServer, seconds: float = 10.0) -> dict:
    gen = chain(server, timeout_s=20, deadline_s=25, first_token_timeout_s=5,
                breaker={"failure_threshold": 1, "reset_timeout_s": 2.0})
    await gen.generate(REQUEST)  # opens the breaker
    latencies: list[float] = []

    async def client() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            await gen.generate(REQUEST)
            latencies.append(time.perf_counter() - t0)
            await asyncio.sleep(0.05)

    await asyncio.gather(*(client() for _ in range(4)))
    return {"requests": len(latencies), "probes": gen.members[0].probes,
            "max_ms": round(max(latencies) * 1000, 1),
            "p50_ms": round(sorted(latencies)[len(latencies) // 2] * 1000, 2)}


async def main() -> None:
    server = LLMServer()
    try:
        server.mode("hang")
        rows = [
            # configs/cluster.yaml's generator: 20 s per call, 25 s deadline, 5 s to first token
            await first_request(server, timeout_s=20, deadline_s=25, first_token_timeout_s=5),
            # the same without a first-token timeout: one whole timeout, then the fallback
            await first_request(server, timeout_s=20, deadline_s=25),
            # the drill: 30 s per call inside an 80 s deadline (was 80 s, empty answer)
            await first_request(server, timeout_s=30, deadline_s=80),
        ]
        rows.append({"while_reprobing_10s_4_clients": await while_reprobing(server)})
        for row in rows:
            print(json.dumps(row))
    finally:
        server.kill()


if __name__ == "__main__":
    asyncio.run(main())
