"""Scorers that need no model weights: the reranker's fallbacks."""

from __future__ import annotations

from ragserve.lexical import bm25_scores
from ragserve.schemas import ScoredChunk

__all__ = ["LexicalFusionScorer", "RetrievalOrderScorer"]


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
