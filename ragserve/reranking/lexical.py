"""Scorers that need no model weights: the reranker's fallbacks."""

from __future__ import annotations

import math
import re
from collections import Counter

from ragserve.schemas import ScoredChunk

__all__ = ["LexicalFusionScorer", "RetrievalOrderScorer", "tokenize", "bm25_scores"]

_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    """a an and are as at be been but by can do does for from had has have how i if in into is it
    its me my no not of on or our so than that the their them then there these they this to was
    we were what when where which who why will with you your""".split()
)
K1 = 0.9
B = 0.4


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without English stopwords."""
    return [t for t in _WORD.findall(text.lower()) if t not in _STOPWORDS]


def stem(term: str) -> str:
    """Strip a few English inflections so "erupted" meets "erupt" (no dictionary needed)."""
    for suffix in ("ing", "ed", "es", "s"):
        if term.endswith(suffix) and len(term) - len(suffix) >= 3:
            return term[: -len(suffix)]
    return term


def bm25_scores(query: str, passages: list[str], k1: float = K1, b: float = B) -> list[float]:
    """BM25 of ``query`` against each passage, with IDF computed over these passages only."""
    docs = [Counter(tokenize(p)) for p in passages]
    if not docs:
        return []
    lengths = [sum(d.values()) for d in docs]
    avg_len = (sum(lengths) / len(docs)) or 1.0
    n = len(docs)
    scores = [0.0] * n
    for term in set(tokenize(query)):
        df = sum(1 for d in docs if term in d)
        if df == 0:
            continue
        idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = d.get(term, 0)
            if tf:
                scores[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[i] / avg_len))
    return scores


def _min_max(values: list[float]) -> list[float]:
    lo, hi = min(values, default=0.0), max(values, default=0.0)
    if hi - lo <= 1e-12:  # all equal: this signal cannot tell the passages apart
        return [0.0] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


def _retrieval_scores(passages: list[ScoredChunk]) -> list[float]:
    return [p.retrieval_score if p.retrieval_score is not None else p.score for p in passages]


class LexicalFusionScorer:
    """``weight`` × min-max(retrieval score) + (1 − ``weight``) × min-max(BM25), per list.

    BM25 (k1=0.9, b=0.4) rewards passages that contain the query's rarer words, which dense
    retrieval blurs; the retrieval score keeps semantic matches that share no words. Scores are
    in [0, 1] and comparable only within one candidate list.
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
