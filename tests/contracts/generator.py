"""What every ``Generator`` stage does, as tests that each implementation runs.

A concrete test class inherits ``GeneratorContract`` and supplies a ``generator`` fixture: a
ready ``Generator`` (``ragserve/generation/base.py``: async ``generate``, ``stream`` and
``health``). Backends (``GeneratorBackend``) run it inside the real stage,
``deployments.generator.GeneratorDeployment``.

Class settings, for what a backend cannot promise:

- ``counts_tokens = False``: the answer's length is capped by someone else (an
  OpenAI-compatible server is sent ``max_tokens`` and reports its own usage), so
  ``completion_tokens <= max_tokens`` is not this backend's to keep.
- ``deterministic = False``: a sampling backend; ``stream`` and ``generate`` may then say
  different things.
- ``answer_tokens``: the ``max_tokens`` of the ordinary requests (a CPU model answers 8
  tokens in about a second).
"""

from __future__ import annotations

import pytest

from ragserve.errors import InvalidRequestError
from ragserve.generation import Generator
from ragserve.schemas import GenerationRequest, GenerationResult, ScoredChunk

__all__ = ["GeneratorContract", "PASSAGES", "request"]

QUERY = "How often does the espresso machine need descaling?"
PASSAGES = [
    ScoredChunk(chunk_id="00000000-0000-0000-0000-000000000001", doc_id="coffee", chunk_index=0,
                text="The espresso machine needs descaling every two weeks. Use the blue "
                     "tablets, never vinegar.", score=0.9, retrieval_score=0.9),
    ScoredChunk(chunk_id="00000000-0000-0000-0000-000000000002", doc_id="qdrant", chunk_index=0,
                text="Qdrant local mode keeps the collection in a folder on disk.",
                score=0.5, retrieval_score=0.5),
    ScoredChunk(chunk_id="00000000-0000-0000-0000-000000000003", doc_id="tea", chunk_index=0,
                text="Green tea is brewed at eighty degrees for two minutes. Descaling the "
                     "kettle every month keeps the taste clean.", score=0.3, retrieval_score=0.3),
]
TOO_LONG = "why " * 20_000  # more tokens than any backend's context window holds


def request(query: str = QUERY, passages: list[ScoredChunk] | None = None,
            max_tokens: int | None = 24) -> GenerationRequest:
    return GenerationRequest(query=query, passages=PASSAGES if passages is None else passages,
                             max_tokens=max_tokens)


def check_result(result: GenerationResult, req: GenerationRequest) -> None:
    """What every answer says about itself, streamed or not."""
    assert isinstance(result, GenerationResult)
    assert isinstance(result.text, str)
    assert isinstance(result.backend, str) and result.backend
    usage = result.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens > 0 and usage.completion_tokens >= 0
    if result.text.strip():
        assert usage.completion_tokens > 0
    assert 0 <= result.passages_used <= len(req.passages)
    assert result.passages_used + result.passages_dropped == len(req.passages)
    assert all(1 <= n <= result.passages_used for n in result.cited), result.cited
    assert len(set(result.cited)) == len(result.cited)


async def collect(generator, req: GenerationRequest) -> tuple[list[str], GenerationResult]:
    """The stream's deltas and its one result, checking the items' shape on the way."""
    deltas: list[str] = []
    results: list[GenerationResult] = []
    async for item in generator.stream(req):
        assert isinstance(item, dict) and len(item) == 1, item
        if "result" in item:
            results.append(item["result"])
        else:
            assert not results, "a delta after the result"
            assert isinstance(item["delta"], str)
            deltas.append(item["delta"])
    assert len(results) == 1, f"{len(results)} results in one stream"
    return deltas, results[0]


class GeneratorContract:
    """The ``Generator`` protocol's promises, as tests."""

    counts_tokens = True
    deterministic = True
    answer_tokens = 24

    def request(self, **kw) -> GenerationRequest:
        return request(**{"max_tokens": self.answer_tokens, **kw})

    async def test_satisfies_the_protocol(self, generator):
        assert isinstance(generator, Generator)

    async def test_generate_answers_with_usage_and_citations(self, generator):
        req = self.request()
        result = await generator.generate(req)
        check_result(result, req)
        assert result.text.strip()

    async def test_stream_is_deltas_then_one_result_of_their_text(self, generator):
        req = self.request()
        deltas, result = await collect(generator, req)
        check_result(result, req)
        assert result.text == "".join(deltas)

    async def test_stream_and_generate_agree(self, generator):
        if not self.deterministic:
            pytest.skip("a sampling backend may answer differently each time")
        req = self.request()
        whole = await generator.generate(req)
        _, streamed = await collect(generator, req)
        assert (streamed.text, streamed.cited, streamed.passages_used, streamed.backend) == \
            (whole.text, whole.cited, whole.passages_used, whole.backend)

    @pytest.mark.parametrize("max_tokens", [1, 5])
    async def test_max_tokens_is_respected(self, generator, max_tokens):
        if not self.counts_tokens:
            pytest.skip("the answer's length is capped (and counted) by the model server")
        req = self.request(max_tokens=max_tokens)
        result = await generator.generate(req)
        check_result(result, req)
        assert result.usage.completion_tokens <= max_tokens
        _, streamed = await collect(generator, req)
        check_result(streamed, req)
        assert streamed.usage.completion_tokens <= max_tokens

    async def test_no_passages_is_still_an_answer_citing_nothing(self, generator):
        req = self.request(passages=[])
        result = await generator.generate(req)
        check_result(result, req)
        assert result.passages_used == 0 and result.cited == []
        _, streamed = await collect(generator, req)
        check_result(streamed, req)
        assert streamed.passages_used == 0 and streamed.cited == []

    async def test_a_question_no_backend_can_fit_is_an_invalid_request(self, generator):
        req = self.request(query=TOO_LONG)
        with pytest.raises(InvalidRequestError):
            await generator.generate(req)
        with pytest.raises(InvalidRequestError):
            await collect(generator, req)

    async def test_health_is_a_dict_naming_the_backend(self, generator):
        health = await generator.health()
        assert isinstance(health, dict)
        assert isinstance(health["backend"], str) and health["backend"]
