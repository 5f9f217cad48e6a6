"""The generator fallback chain against real OpenAI-compatible HTTP servers (separate processes,
``tests/llm_server.py``) told to fail in each way, with the real extractive backend last."""

from __future__ import annotations

import asyncio
import time

import pytest

from ragserve.config import GeneratorConfig
from ragserve.errors import StageUnavailableError
from ragserve.generation.factory import build_generation_chain
from ragserve.schemas import GenerationRequest, ScoredChunk
from tests.conftest import LLMServer

PASSAGES = [
    ScoredChunk(chunk_id="c1", doc_id="coffee", chunk_index=0, score=1.0,
                text="The espresso machine needs descaling every two weeks. Use blue tablets."),
    ScoredChunk(chunk_id="c2", doc_id="qdrant", chunk_index=0, score=0.5,
                text="Qdrant local mode keeps the collection in a folder on disk."),
]


def request(query="How often does the espresso machine need descaling?"):
    return GenerationRequest(query=query, passages=PASSAGES, max_tokens=32)


def chain(*servers: LLMServer, timeout_s=2.0, retry=None, breaker=None, routing=None,
          deadline_s=30.0, extractive=True):
    backends = [{"backend": "openai", "base_url": s.base_url, "model": f"m{i}",
                 "timeout_s": timeout_s} for i, s in enumerate(servers)]
    config = GeneratorConfig.model_validate({
        "backend": backends[0],
        "fallbacks": backends[1:] + ([{"backend": "extractive"}] if extractive else []),
        "retry": retry or {"base_delay_s": 0.01, "max_delay_s": 0.05},
        "breaker": breaker or {"failure_threshold": 3, "reset_timeout_s": 1.0},
        "routing": routing,
        "deadline_s": deadline_s,
    })
    gen = build_generation_chain(config)
    gen.warm_up()
    return gen


async def test_healthy_primary_answers_first_try(llm_server):
    gen = chain(llm_server)
    result = await gen.generate(request())
    assert result.backend == "openai:m0" and "descaling every two weeks" in result.text
    assert [(a.backend, a.outcome, a.tries) for a in result.attempts] == [("openai:m0", "ok", 1)]
    assert llm_server.requests() == 1


async def test_5xx_is_retried_three_times_then_falls_through(llm_server):
    gen = chain(llm_server)
    llm_server.mode("error", status=503)
    result = await gen.generate(request())
    assert llm_server.requests() == 3  # at most 3 attempts
    assert [(a.backend, a.outcome, a.reason, a.tries) for a in result.attempts] == [
        ("openai:m0", "failed", "http 503", 3), ("extractive", "ok", None, 1)]
    assert result.backend == "extractive" and result.cited == [1]


async def test_a_4xx_is_not_retried(llm_server):
    gen = chain(llm_server)
    llm_server.mode("error", status=400)
    result = await gen.generate(request())
    assert llm_server.requests() == 1
    assert result.attempts[0].reason == "http 400" and result.attempts[0].tries == 1


async def test_429_waits_for_retry_after_then_succeeds(llm_server):
    gen = chain(llm_server)
    llm_server.mode("rate_limit", retry_after="0.5")

    async def recover():
        await asyncio.sleep(0.2)
        await asyncio.to_thread(llm_server.mode, "ok")

    started = time.perf_counter()
    result, _ = await asyncio.gather(gen.generate(request()), recover())
    assert time.perf_counter() - started >= 0.5  # the server's Retry-After, not the backoff
    assert result.backend == "openai:m0"
    assert (result.attempts[0].outcome, result.attempts[0].tries) == ("ok", 2)


async def test_a_long_retry_after_falls_through_at_once(llm_server):
    gen = chain(llm_server)
    llm_server.mode("rate_limit", retry_after="120")
    result = await gen.generate(request())
    assert llm_server.requests() == 1
    assert result.backend == "extractive"
    assert result.attempts[0].reason == "http 429, retry after 120s"


async def test_breaker_opens_half_opens_and_closes(llm_server):
    gen = chain(llm_server, timeout_s=0.3,
                breaker={"failure_threshold": 3, "reset_timeout_s": 1.0})
    llm_server.mode("hang")
    first = await gen.generate(request())
    assert [(a.outcome, a.reason, a.tries) for a in first.attempts[:1]] == [("failed", "timeout", 3)]
    assert gen.health()["chain"][0]["breaker"]["state"] == "open"
    # Tripped: the dead primary costs nothing now.
    sent = llm_server.requests()
    started = time.perf_counter()
    second = await gen.generate(request())
    fast = time.perf_counter() - started
    assert llm_server.requests() == sent and fast < 0.3
    assert [(a.outcome, a.reason) for a in second.attempts] == [
        ("skipped", "circuit open"), ("ok", None)]
    # Half-open after reset_timeout_s: a failing trial opens it again...
    await asyncio.sleep(1.05)
    third = await gen.generate(request())
    assert (third.attempts[0].outcome, third.attempts[0].tries) == ("failed", 1)
    assert gen.health()["chain"][0]["breaker"]["state"] == "open"
    # ...and a good trial closes it.
    llm_server.mode("ok")
    await asyncio.sleep(1.05)
    fourth = await gen.generate(request())
    assert fourth.backend == "openai:m0"
    assert gen.health()["chain"][0]["breaker"]["state"] == "closed"


async def test_a_dead_server_falls_through_in_order(llm_server):
    second = LLMServer()
    try:
        gen = chain(llm_server, second)
        llm_server.kill()
        second.mode("error", status=500)
        result = await gen.generate(request())
        assert [(a.backend, a.outcome, a.reason) for a in result.attempts] == [
            ("openai:m0", "failed", "unreachable"), ("openai:m1", "failed", "http 500"),
            ("extractive", "ok", None)]
        # Both tripped their breakers (3 failures each): the next request skips them at once.
        second.mode("ok")
        result = await gen.generate(request())
        assert [(a.backend, a.reason) for a in result.attempts] == [
            ("openai:m0", "circuit open"), ("openai:m1", "circuit open"), ("extractive", None)]
    finally:
        second.kill()


async def test_every_backend_failing_raises_with_the_attempts(llm_server):
    gen = chain(llm_server, extractive=False)
    llm_server.kill()
    with pytest.raises(StageUnavailableError) as err:
        await gen.generate(request())
    attempts = err.value.details["attempts"]
    assert [(a["backend"], a["reason"], a["tries"]) for a in attempts] == [
        ("openai:m0", "unreachable", 3)]


async def test_deadline_bounds_the_whole_chain(llm_server):
    gen = chain(llm_server, timeout_s=5.0, deadline_s=0.5, extractive=False)
    llm_server.mode("hang")
    started = time.perf_counter()
    with pytest.raises(StageUnavailableError):
        await gen.generate(request())
    assert time.perf_counter() - started < 2.0


async def test_simple_queries_go_to_the_cheaper_backend(llm_server):
    cheap = LLMServer()
    try:
        gen = chain(llm_server, routing={"simple_backend": {
            "backend": "openai", "base_url": cheap.base_url, "model": "cheap"}})
        simple = await gen.generate(request("espresso descaling interval?"))
        hard = await gen.generate(request("Why does the espresso machine need descaling?"))
        assert (simple.backend, simple.route) == ("openai:cheap", "simple")
        assert (hard.backend, hard.route) == ("openai:m0", "hard")
        assert gen.health()["routes"] == {"simple": 1, "hard": 1}
        cheap.kill()  # the cheap backend falls back to the strong chain
        again = await gen.generate(request("espresso descaling interval?"))
        assert again.backend == "openai:m0" and again.attempts[0].backend == "openai:cheap"
    finally:
        cheap.kill()


async def test_stream_falls_back_before_the_first_token(llm_server):
    gen = chain(llm_server, breaker={"failure_threshold": 10, "reset_timeout_s": 1.0})
    llm_server.mode("error", status=502)
    items = [item async for item in gen.stream(request())]
    text = "".join(i["delta"] for i in items if "delta" in i)
    result = items[-1]["result"]
    assert result.backend == "extractive" and text == result.text
    assert [(a.outcome, a.reason) for a in result.attempts] == [
        ("failed", "http 502"), ("ok", None)]
    llm_server.mode("ok")
    items = [item async for item in gen.stream(request())]
    assert items[-1]["result"].backend == "openai:m0"
    assert "".join(i["delta"] for i in items if "delta" in i).strip() == items[-1]["result"].text.strip()
