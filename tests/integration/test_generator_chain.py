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


async def test_breaker_opens_then_probes_in_the_background(llm_server):
    # 0.6 s per call: a good trial must answer within it while the rest of the suite loads
    # the machine (at 0.3 s one timed out there and left the breaker open)
    gen = chain(llm_server, timeout_s=0.6,
                breaker={"failure_threshold": 2, "reset_timeout_s": 1.0})
    llm_server.mode("hang")
    for _ in range(2):  # a timed-out try is not retried: the fallback answers at once
        r = await gen.generate(request())
        assert [(a.backend, a.outcome, a.reason, a.tries) for a in r.attempts] == [
            ("openai:m0", "failed", "timeout", 1), ("extractive", "ok", None, 1)]
    health = gen.health()
    assert health["chain"][0]["breaker"]["state"] == "open"
    assert health["status"] == "degraded" and health["open_breakers"] == ["openai:m0"]
    assert health["backends"]["openai:m0"] == {
        "role": "primary", "up": False, "state": "down", "breaker": "open",
        "last_failure": "timeout"}
    assert health["backends"]["extractive"]["up"] is True
    # Tripped: the dead primary costs nothing now.
    sent = llm_server.requests()
    started = time.perf_counter()
    second = await gen.generate(request())
    fast = time.perf_counter() - started
    assert llm_server.requests() == sent and fast < 0.3
    assert [(a.outcome, a.reason) for a in second.attempts] == [
        ("skipped", "circuit open"), ("ok", None)]
    # Half-open after reset_timeout_s: the trial runs in the background, the request does
    # not wait on it; a failing trial opens the breaker again...
    await asyncio.sleep(1.05)
    started = time.perf_counter()
    third = await gen.generate(request())
    assert time.perf_counter() - started < 0.25
    assert [(a.outcome, a.reason) for a in third.attempts] == [
        ("skipped", "circuit half-open, probing"), ("ok", None)]
    assert gen.health()["backends"]["openai:m0"]["state"] == "probing"
    await asyncio.sleep(0.9)  # the probe's own timeout (0.6 s) has passed
    assert gen.health()["chain"][0]["breaker"]["state"] == "open"
    assert llm_server.requests() == sent + 1  # exactly one trial
    # ...and a good trial closes it, so the request after it is the primary's again.
    llm_server.mode("ok")
    await asyncio.sleep(1.05)
    fourth = await gen.generate(request())
    assert fourth.backend == "extractive"
    for _ in range(50):
        if gen.health()["chain"][0]["breaker"]["state"] == "closed":
            break
        await asyncio.sleep(0.05)
    assert gen.health()["status"] == "ok" and gen.health()["open_breakers"] == []
    fifth = await gen.generate(request())
    assert fifth.backend == "openai:m0"


async def test_hung_primary_first_request_answers_in_seconds_with_the_fallback(llm_server):
    """The cluster config's shape: a 20 s per-call timeout inside a 25 s deadline. A server
    that accepts the call and sends nothing is given up after ``first_token_timeout_s``."""
    gen = chain(llm_server, timeout_s=20.0, deadline_s=25.0,
                retry={"base_delay_s": 0.2, "max_delay_s": 2.0})
    gen.config.first_token_timeout_s = 2.0
    llm_server.mode("hang")
    started = time.perf_counter()
    result = await gen.generate(request())
    elapsed = time.perf_counter() - started
    assert result.backend == "extractive" and "descaling every two weeks" in result.text
    assert [(a.backend, a.outcome, a.reason, a.tries) for a in result.attempts] == [
        ("openai:m0", "failed", "timeout", 1), ("extractive", "ok", None, 1)]
    assert 1.9 < elapsed < 3.5, elapsed
    # The stream the same way: the fallback's tokens after ~2 s.
    started = time.perf_counter()
    items = [item async for item in gen.stream(request())]
    assert items[-1]["result"].backend == "extractive"
    assert time.perf_counter() - started < 3.5


async def test_a_hung_primary_never_takes_the_fallbacks_share_of_the_deadline(llm_server):
    """Per-call timeout longer than the whole deadline (the issue's 80 s case, shrunk): the
    primary gets what the later backends do not need, and the extractive answer comes."""
    gen = chain(llm_server, timeout_s=30.0, deadline_s=8.0)
    llm_server.mode("hang")
    started = time.perf_counter()
    result = await gen.generate(request())
    elapsed = time.perf_counter() - started
    assert result.backend == "extractive" and result.text
    # extractive reserves its timeout_s (5 s): the primary has 8 - 5 = 3 s.
    assert [(a.outcome, a.reason, a.tries) for a in result.attempts] == [
        ("failed", "timeout", 1), ("ok", None, 1)]
    assert 2.9 < elapsed < 4.5, elapsed
    # A deadline smaller than the reserves: an equal share each, the fallback still runs.
    gen = chain(llm_server, timeout_s=30.0, deadline_s=2.0)
    started = time.perf_counter()
    result = await gen.generate(request())
    assert result.backend == "extractive" and time.perf_counter() - started < 1.6


async def test_no_request_waits_on_a_hung_backend_while_its_breaker_reprobes(llm_server):
    gen = chain(llm_server, timeout_s=1.0,
                breaker={"failure_threshold": 1, "reset_timeout_s": 0.5})
    llm_server.mode("hang")
    await gen.generate(request())  # opens the breaker (one timeout)
    latencies: list[float] = []

    async def client() -> None:
        end = time.perf_counter() + 3.0
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            r = await gen.generate(request())
            latencies.append(time.perf_counter() - t0)
            assert r.backend == "extractive"
            await asyncio.sleep(0.02)

    await asyncio.gather(*(client() for _ in range(4)))
    probes = gen.members[0].probes
    assert probes >= 2  # it re-probed several times meanwhile...
    assert max(latencies) < 0.5, max(latencies)  # ...and nobody waited for a probe
    assert llm_server.requests() == 1 + probes


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
