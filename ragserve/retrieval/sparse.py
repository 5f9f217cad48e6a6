"""Lexical sparse vectors for hybrid search, over ``ragserve.lexical.analyze``'s terms.

A document's vector holds BM25's term-frequency part per term (saturated by ``k1``,
length-normalised by ``b`` against ``avg_len``); Qdrant multiplies in the IDF at query time
(``Modifier.IDF``), over the whole collection, so the score of a query whose terms all weigh
1.0 is BM25. Terms map to indices through a stable 31-bit hash: no vocabulary to store or
keep in sync across replicas (collisions at 2^31 are negligible for a corpus vocabulary).
"""

from __future__ import annotations

import hashlib
from collections import Counter

from ragserve.config import LexicalConfig
from ragserve.lexical import ANALYZER_ID, analyze

__all__ = ["LexicalEncoder", "term_index"]


def term_index(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "little") & 0x7FFFFFFF


class LexicalEncoder:
    """Documents and queries as (term indices, weights). ``analyzer`` names the analysis the
    vectors come from: an index must be queried with the one it was built with."""

    analyzer = ANALYZER_ID

    def __init__(self, config: LexicalConfig | None = None) -> None:
        self.config = config or LexicalConfig()

    @staticmethod
    def terms(text: str) -> list[str]:
        return analyze(text)

    def document(self, text: str) -> tuple[list[int], list[float]]:
        terms = self.terms(text)
        if not terms:
            return [], []
        c = self.config
        norm = c.k1 * (1 - c.b + c.b * len(terms) / c.avg_len)
        weights: dict[int, float] = {}
        for term, tf in Counter(terms).items():
            idx = term_index(term)
            weights[idx] = weights.get(idx, 0.0) + tf * (c.k1 + 1) / (tf + norm)
        return list(weights), list(weights.values())

    def query(self, text: str) -> tuple[list[int], list[float]]:
        indices = sorted({term_index(t) for t in self.terms(text)})
        return indices, [1.0] * len(indices)
