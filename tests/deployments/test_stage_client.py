"""The ingress's stage clients use the transport of the process they run in, not the one
pickled with a handle that a driver built (``deployments/_client.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
from deployments._client import StageClient

class Handle:
    def options(self, **kwargs):
        print(kwargs)
        return self

StageClient(Handle(), "embedder")
"""


@pytest.mark.parametrize("throughput, by_reference", [("1", False), ("0", True)])
def test_stage_client_takes_this_process_transport(throughput, by_reference):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = throughput  # what a replica's environment says
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    # Throughput mode: gRPC between stages (not by reference); else Ray actor calls.
    assert out.strip().splitlines()[-1] == f"{{'_by_reference': {by_reference}}}"


class _Method:
    def __init__(self, outcomes: list) -> None:
        self.outcomes = outcomes
        self.calls = 0

    async def remote(self, *args, **kwargs):
        outcome = self.outcomes[self.calls]
        self.calls += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class _Handle:
    """A DeploymentHandle's shape: ``options`` and one method (``embed``) whose calls give
    ``outcomes`` in turn."""

    def __init__(self, outcomes: list) -> None:
        self.embed = _Method(outcomes)

    def options(self, **kwargs):
        return self


def _lost_replicas():
    from ray.exceptions import ActorDiedError, ActorUnavailableError

    return [ActorDiedError(), ActorUnavailableError("node lost", None)]


@pytest.mark.parametrize("lost", range(2), ids=["died", "unavailable"])
async def test_a_call_that_reached_a_lost_replica_is_sent_once_more(lost):
    from deployments._client import EmbedderClient

    handle = _Handle([_lost_replicas()[lost], [[1.0, 0.0]]])
    assert await EmbedderClient(handle, "embedder").embed(["a"]) == [[1.0, 0.0]]
    assert handle.embed.calls == 2


async def test_a_replica_lost_twice_is_a_stage_unavailable_error():
    from deployments._client import EmbedderClient
    from ragserve.errors import StageUnavailableError

    handle = _Handle(_lost_replicas())
    with pytest.raises(StageUnavailableError, match="embedder failed: ActorUnavailableError"):
        await EmbedderClient(handle, "embedder").embed(["a"])
    assert handle.embed.calls == 2  # once more, not a loop


async def test_other_failures_are_not_repeated():
    from deployments._client import EmbedderClient
    from ragserve.errors import InvalidRequestError

    handle = _Handle([InvalidRequestError("too long"), [[1.0]]])
    with pytest.raises(InvalidRequestError):
        await EmbedderClient(handle, "embedder").embed(["a"])
    assert handle.embed.calls == 1


class _StreamHandle:
    """``stream.remote`` gives each call's items in turn; an exception item is raised there."""

    def __init__(self, runs: list[list]) -> None:
        self.runs = runs
        self.calls = 0
        self.stream = self

    def options(self, **kwargs):
        return self

    def remote(self, *args, **kwargs):
        items = self.runs[self.calls]
        self.calls += 1

        async def gen():
            for item in items:
                if isinstance(item, BaseException):
                    raise item
                yield item
        return gen()


async def _drain(client, request):
    return [item async for item in client.stream(request)]


async def test_a_stream_lost_before_its_first_item_is_started_again():
    from deployments._client import GeneratorClient
    from ragserve.schemas import GenerationRequest

    handle = _StreamHandle([[_lost_replicas()[0]], [{"delta": "a"}, {"delta": "b"}]])
    out = await _drain(GeneratorClient(handle, "generator"), GenerationRequest(query="q", passages=[]))
    assert out == [{"delta": "a"}, {"delta": "b"}] and handle.calls == 2


async def test_a_stream_lost_midway_is_not_started_again():
    from deployments._client import GeneratorClient
    from ragserve.errors import StageUnavailableError
    from ragserve.schemas import GenerationRequest

    handle = _StreamHandle([[{"delta": "a"}, _lost_replicas()[0]], [{"delta": "x"}]])
    with pytest.raises(StageUnavailableError):
        await _drain(GeneratorClient(handle, "generator"), GenerationRequest(query="q", passages=[]))
    assert handle.calls == 1  # the client saw "a" already: repeating would repeat it


class _Recording:
    """Tracing on at ``ratio``, spans kept in memory."""

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio

    def __enter__(self):
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from ragserve.config import TracingConfig
        from ragserve.observability import tracing

        tracing.configure_tracing(TracingConfig(
            enabled=True, otlp_endpoint="http://127.0.0.1:9/v1/traces",
            sampling_ratio=self.ratio), component="test")
        self.memory = InMemorySpanExporter()
        tracing._provider.add_span_processor(SimpleSpanProcessor(self.memory))
        return self

    def __exit__(self, *exc):
        from ragserve.observability import tracing

        tracing.shutdown_tracing()

    def names(self) -> list[str]:
        return sorted(s.name for s in self.memory.get_finished_spans())


class _Replica:
    async def embed(self, texts, kind="passage"):
        return [[1.0] for _ in texts]


class _Through:
    """A handle whose calls reach an instrumented replica in this process, as Serve would
    deliver them (keyword arguments included)."""

    def __init__(self, replica) -> None:
        self.replica = replica
        self.kwargs: list[dict] = []
        self.embed = self

    def options(self, **kwargs):
        return self

    async def remote(self, *args, **kwargs):
        self.kwargs.append(dict(kwargs))
        return await self.replica.embed(*args, **kwargs)


@pytest.mark.parametrize("ratio, spans", [
    (1.0, ["embedder.embed", "request"]),  # the replica's span, a child of the caller's
    (0.0, []),  # not sampled: no child span, no carrier, no replica span
])
async def test_only_sampled_requests_carry_their_trace_to_the_replicas(ratio, spans):
    from deployments._client import EmbedderClient
    from deployments._observed import instrument
    from ragserve.observability import tracing

    handle = _Through(instrument(_Replica, "embedder")())
    with _Recording(ratio) as rec:
        with tracing.span("request", kind=tracing.SpanKind.SERVER):
            assert await EmbedderClient(handle, "embedder").embed(["a"]) == [[1.0]]
        assert rec.names() == spans
    assert ("_otel" in handle.kwargs[0]) is (ratio == 1.0)
