"""Retry classification, Retry-After parsing, backoff bounds and the simple-query router."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from ragserve.config import RetryConfig, RoutingConfig
from ragserve.errors import InvalidRequestError, StageTimeoutError, StageUnavailableError
from ragserve.generation.routing import ComplexityRouter
from ragserve.resilience.retry import backoff_s, describe_failure, is_transient, retry_after_s
from ragserve.schemas import GenerationRequest


@pytest.mark.parametrize("exc,transient", [
    (StageTimeoutError("slow"), True),
    (StageUnavailableError("refused"), True),  # no status: could not connect
    (StageUnavailableError("x", details={"status": 503}), True),
    (StageUnavailableError("x", details={"status": 429}), True),
    (StageUnavailableError("x", details={"status": 400}), False),
    (StageUnavailableError("x", details={"status": 401}), False),
    (InvalidRequestError("bad"), False),
    (RuntimeError("model exploded"), False),
])
def test_transient_failures(exc, transient):
    assert is_transient(exc) is transient


def test_retry_after_seconds_and_http_date():
    assert retry_after_s(StageUnavailableError("x", details={"retry_after": "2"})) == 2.0
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=timezone.utc)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_s(StageUnavailableError("x", details={"retry_after": date}), now) == 30.0
    assert retry_after_s(StageUnavailableError("x", details={"retry_after": "soon"})) is None
    assert retry_after_s(StageUnavailableError("x")) is None


def test_backoff_is_jittered_exponential_and_capped():
    cfg = RetryConfig(base_delay_s=0.1, max_delay_s=0.3)
    rng = random.Random(0)
    for attempt, cap in ((1, 0.1), (2, 0.2), (3, 0.3), (6, 0.3)):
        waits = [backoff_s(attempt, cfg, rng) for _ in range(200)]
        assert 0 <= min(waits) and max(waits) <= cap and max(waits) > cap * 0.8


def test_max_attempts_is_at_most_three():
    with pytest.raises(ValueError):
        RetryConfig(max_attempts=4)


def test_failure_descriptions():
    assert describe_failure(StageTimeoutError("t")) == "timeout"
    assert describe_failure(StageUnavailableError("x", details={"status": 502})) == "http 502"
    assert describe_failure(StageUnavailableError("x")) == "unreachable"


def router(**kw):
    cfg = RoutingConfig(simple_backend={"backend": "extractive"}, **kw)
    return ComplexityRouter(cfg, lambda text: len(text.split()))


def req(query, history=()):
    return GenerationRequest(query=query, passages=[], history=list(history))


@pytest.mark.parametrize("query,route", [
    ("What port does Qdrant use?", "simple"),
    ("Why does the retriever run one replica?", "hard"),
    ("compare RRF and DBSF fusion", "hard"),
    ("How does batching work?", "hard"),
    ("Whyever not", "simple"),  # word boundaries: 'why' inside a word does not count
    ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
     "fifteen sixteen seventeen", "hard"),
])
def test_router_rules(query, route):
    assert router().classify(req(query))[0] == route


def test_router_counts_and_sends_follow_ups_to_the_strong_model():
    r = router()
    assert r.route(req("Which port?"))[0] == "simple"
    assert r.route(req("Which port?", history=[("q", "a")])) == ("hard", "follow-up in a conversation")
    assert r.counts == {"simple": 1, "hard": 1}
