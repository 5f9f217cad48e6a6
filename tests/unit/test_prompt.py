"""Context-window budgeting, numbering and citation parsing (ragserve.generation.prompt)."""

from __future__ import annotations

import pytest

from ragserve.config import ExtractiveGeneratorConfig, GeneratorConfig
from ragserve.errors import InvalidRequestError
from ragserve.generation.prompt import (
    UNTRUSTED_RULE,
    build_prompt,
    extract_citations,
    plan_prompt,
    resolve_max_tokens,
)
from ragserve.schemas import GenerationRequest, ScoredChunk, Usage
from ragserve.tokens import count_tokens


def words(text: str) -> int:
    """A counter whose arithmetic is easy to follow: one token per word."""
    return len(text.split())


def chunk(i: int, text: str, score: float) -> ScoredChunk:
    return ScoredChunk(chunk_id=f"c{i}", doc_id=f"d{i}", chunk_index=0, text=text, score=score)


def passage(i: int, n_words: int, score: float) -> ScoredChunk:
    return chunk(i, " ".join(f"p{i}w{k}" for k in range(n_words)), score)


def plan(req, *, window, max_tokens=10, system="Answer from the passages."):
    return build_prompt(req, system_prompt=system, count_tokens=words,
                        context_window=window, max_tokens=max_tokens)


def test_keeps_highest_scores_and_numbers_them_in_request_order():
    passages = [passage(0, 50, 0.2), passage(1, 50, 0.9), passage(2, 50, 0.5), passage(3, 50, 0.7)]
    req = GenerationRequest(query="which one?", passages=passages)
    base = plan(GenerationRequest(query="which one?", passages=[]), window=1000).prompt_tokens
    # room for two 51-word passage blocks, not three
    window = base + 10 + 2 * 51 + 20
    p = plan(req, window=window)
    assert [c.chunk_id for c in p.passages] == ["c1", "c3"]
    assert p.passages_dropped == 2
    user = p.messages[-1]["content"]
    assert f"[1] {passages[1].text}" in user and f"[2] {passages[3].text}" in user
    assert passages[0].text not in user and passages[2].text not in user
    assert "[3]" not in user
    assert p.prompt_tokens + p.max_tokens <= window
    assert p.messages[0] == {"role": "system",
                             "content": f"Answer from the passages.\n\n{UNTRUSTED_RULE}"}
    assert user.rstrip().endswith("Question: which one?")


def test_selection_stops_at_first_passage_that_does_not_fit():
    # The 0.8 passage is too long; the 0.7 one would fit, but keeping it would drop a better
    # passage while keeping a worse one, and break "kept == request.passages[:used]".
    passages = [passage(0, 10, 0.9), passage(1, 500, 0.8), passage(2, 10, 0.7)]
    p = plan(GenerationRequest(query="q", passages=passages), window=200)
    assert p.passages == passages[:1]
    assert min(c.score for c in p.passages) >= max(
        c.score for c in passages if c not in p.passages)


def test_sorted_input_keeps_a_prefix_and_everything_fits_when_room():
    passages = [passage(i, 30, 1.0 - i / 10) for i in range(6)]
    req = GenerationRequest(query="q", passages=passages)
    small = plan(req, window=150)
    assert 0 < len(small.passages) < 6
    assert small.passages == passages[:len(small.passages)]
    big = plan(req, window=5000)
    assert big.passages == passages and big.passages_dropped == 0


def test_history_is_trimmed_oldest_first_and_passages_win():
    history = [(f"question {i} " + "x " * 20, f"answer {i} " + "y " * 20) for i in range(6)]
    req = GenerationRequest(query="and now?", passages=[passage(0, 40, 0.9)], history=history)
    no_history = plan(req.model_copy(update={"history": []}), window=1000).prompt_tokens
    # room for the passage, the question and two turns (each ~2 x 22 words + overheads)
    p = plan(req, window=no_history + 10 + 2 * 52 + 5)
    assert p.passages_dropped == 0
    turns = [m["content"] for m in p.messages[1:-1]]
    assert turns == [history[4][0], history[4][1], history[5][0], history[5][1]]
    assert [m["role"] for m in p.messages[1:-1]] == ["user", "assistant", "user", "assistant"]
    assert p.prompt_tokens + p.max_tokens <= no_history + 10 + 2 * 52 + 5
    # with only room for the passage, history goes first
    tight = plan(req, window=no_history + 10 + 5)
    assert tight.passages_dropped == 0
    assert [m["role"] for m in tight.messages] == ["system", "user"]


def test_question_that_cannot_fit_is_refused():
    req = GenerationRequest(query="word " * 300, passages=[passage(0, 5, 0.9)])
    with pytest.raises(InvalidRequestError) as err:
        plan(req, window=256, max_tokens=10)
    assert err.value.details["context_window"] == 256
    # the answer's room counts too
    with pytest.raises(InvalidRequestError):
        plan(GenerationRequest(query="short?", passages=[]), window=256, max_tokens=250)


def test_resolve_max_tokens_uses_default_and_cap():
    cfg = GeneratorConfig(backend=ExtractiveGeneratorConfig(), default_max_tokens=100,
                          max_tokens_cap=300)
    assert resolve_max_tokens(None, cfg) == 100
    assert resolve_max_tokens(50, cfg) == 50
    assert resolve_max_tokens(5000, cfg) == 300
    with pytest.raises(InvalidRequestError):
        resolve_max_tokens(0, cfg)


def test_plan_prompt_with_tiktoken_and_config_limits():
    cfg = GeneratorConfig(backend=ExtractiveGeneratorConfig(context_window=512),
                          default_max_tokens=64, max_tokens_cap=128)
    text = "Ray Serve scales deployments independently. " * 20
    req = GenerationRequest(query="How does Ray Serve scale?", max_tokens=1000,
                            passages=[chunk(i, text, 1 - i / 10) for i in range(5)])
    p = plan_prompt(req, cfg, count_tokens)
    assert p.max_tokens == 128
    assert 0 < len(p.passages) < 5
    exact = sum(4 + count_tokens(m["content"]) for m in p.messages) + 3
    assert p.prompt_tokens == exact and exact + 128 <= 512


def test_extract_citations():
    text = "Paris [2]. Also [1, 3] and again [2]; see [7] and the year [2023]. Range [3-4]."
    assert extract_citations(text, 4) == [2, 1, 3, 4]
    assert extract_citations(text, 2) == [2, 1]
    assert extract_citations("no markers here, just (1) and 1]", 3) == []
    assert extract_citations("[0] [ 2 ] [1;2]", 2) == [2, 1]
    assert extract_citations("[1]", 0) == []


def test_plan_result_reports_citations_against_kept_passages():
    passages = [passage(0, 5, 0.9), passage(1, 5, 0.8), passage(2, 500, 0.1)]
    p = plan(GenerationRequest(query="q", passages=passages), window=200)
    res = p.result("see [2] and [3]", backend="x", usage=Usage())
    assert res.passages_used == 2 and res.passages_dropped == 1
    assert res.cited == [2]  # [3] names a dropped passage: the model never saw it
