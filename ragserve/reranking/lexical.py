"""Scorers that need no model weights: the reranker's fallbacks."""

from __future__ import annotations

from ragserve.lexical import bm25_scores
from ragserve.passages import content_terms, read_units, unit_scores
from ragserve.schemas import ScoredChunk

__all__ = ["BestPartScorer", "LexicalFusionScorer", "RetrievalOrderScorer"]


def _min_max(values: list[float]) -> list[float]:
    lo, hi = min(values, default=0.0), max(values, default=0.0)
    if hi - lo <= 1e-12:  # all equal: this signal cannot tell the passages apart
        return [0.0] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


def _retrieval_scores(passages: list[ScoredChunk]) -> list[float]:
    return [p.retrieval_score if p.retrieval_score is not None else p.score for p in passages]


class LexicalFusionScorer:
    """``weight`` × min-max(retrieval score) + (1 − ``weight``) × min-max(BM25), per list.

    BM25 (k1=0.9, b=0.4, over ``ragserve.lexical.analyze``'s terms, as the retriever's) rewards
    passages that contain the query's rarer words, which dense retrieval blurs; the retrieval
    score keeps semantic matches that share no words. Scores are in [0, 1] and comparable only
    within one candidate list.
    """

    name = "lexical_fusion"

    def __init__(self, weight: float = 0.5) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ValueError("weight must be in [0, 1]")
        self.weight = weight

    def score(self, query: str, passages: list[ScoredChunk]) -> list[float]:
        dense = _min_max(_retrieval_scores(passages))
        lexical = _min_max(bm25_scores(query, [p.text for p in passages]))
        w = self.weight
        return [w * d + (1.0 - w) * s for d, s in zip(dense, lexical)]

    def score_many(self, groups: list[tuple[str, list[ScoredChunk]]]) -> list[list[float]]:
        return [self.score(q, ps) for q, ps in groups]


class RetrievalOrderScorer:
    """Keeps the retriever's scores (and so its order): the fallback of last resort."""

    name = "retrieval"

    def score(self, query: str, passages: list[ScoredChunk]) -> list[float]:
        return _retrieval_scores(passages)

    def score_many(self, groups: list[tuple[str, list[ScoredChunk]]]) -> list[list[float]]:
        return [self.score(q, ps) for q, ps in groups]


class BestPartScorer:
    """Each candidate judged by its best part, fused with the retriever's order.

    An ingest chunk is ~1,000 tokens; the answer to a question is usually one sentence of it.
    Retrieval scores the chunk as a whole, so a chunk that says the one thing asked ranks
    below chunks that are about the topic throughout. This scorer reads every candidate as
    Markdown units (``ragserve.passages.passage_units``: sentences, table rows, code lines,
    headings), scores each unit by the question's content words it shares, IDF-weighted over
    the candidate list (``unit_scores``), and gives the chunk its best unit's score (MaxP, as
    passage-level evidence is used in neural IR). The two orders, the retriever's and the
    best part's, are fused by reciprocal rank: ``1/(k + rank)`` for the retriever's and
    ``weight/(k + rank)`` for the best part's, with the usual ``k = 60``. At ``weight`` 0.5
    the retriever's order leads and the best part moves a chunk a few places: as much as
    weight 1 gains on the project's docs, less of what it loses on SciFact
    (docs/benchmarks/retrieval-quality.md). Ties keep the retriever's order
    (``order_by_scores`` is stable); a chunk that shares no word takes its best-part rank in
    the retriever's order too.

    A chunk's units and their terms are read once per text (``read_units``), since the same
    chunks come back for many questions.
    """

    name = "best_part"

    def __init__(self, weight: float = 0.5, k: float = 60.0) -> None:
        if k <= 0:
            raise ValueError("k must be positive")
        if weight < 0:
            raise ValueError("weight must not be negative")
        self.weight = weight
        self.k = k

    def score(self, query: str, passages: list[ScoredChunk]) -> list[float]:
        n = len(passages)
        if n == 0:
            return []
        retrieval = _retrieval_scores(passages)
        by_retrieval = sorted(range(n), key=lambda i: -retrieval[i])
        place = {i: r for r, i in enumerate(by_retrieval)}
        terms = [read_units(p.text)[1] for p in passages]
        best = [max(row, default=0.0) for row in unit_scores(content_terms(query), terms)]
        by_part = sorted(range(n), key=lambda i: (-best[i], place[i]))
        fused = [0.0] * n
        for order, weight in ((by_retrieval, 1.0), (by_part, self.weight)):
            for rank, i in enumerate(order, start=1):
                fused[i] += weight / (self.k + rank)
        return fused

    def score_many(self, groups: list[tuple[str, list[ScoredChunk]]]) -> list[list[float]]:
        return [self.score(q, ps) for q, ps in groups]
