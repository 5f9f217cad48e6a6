"""Lexical analysis shared by every stage that matches words: terms and BM25.

One definition, so that the retriever's sparse vectors (and the local lexical index built from
them), the reranker's lexical fallback and the extractive generator agree on what a term is.
It follows Lucene's ``EnglishAnalyzer`` with the Snowball English stemmer (Porter2, from
PyStemmer's C build): Unicode word tokens, lower-cased; a possessive ``'s`` dropped and inner
apostrophes removed (``patient's`` → ``patient``, ``don't`` → ``dont``); Lucene's English
stopwords removed; the rest stemmed (``processes``/``processing`` → ``process``,
``queries`` → ``queri`` like ``query``). No model weights.

An index stores analysed terms, so a different analysis makes its lexical vectors wrong for
the queries: ``ANALYZER_ID`` names this analysis and the retriever records it with each
collection (``ragserve.retrieval.qdrant``), refusing one built otherwise. Anything that changes
the terms of some text (tokens, stopwords, stemmer) must bump the version in ``ANALYZER_ID``.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter

import Stemmer

__all__ = [
    "ANALYZER_ID",
    "STOPWORDS",
    "K1",
    "B",
    "EnglishAnalyzer",
    "analyze",
    "tokenize",
    "stem",
    "bm25_scores",
]

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET (Elasticsearch's ``_english_``): short on
# purpose, BM25's IDF already discounts the frequent words it leaves.
STOPWORDS = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their
    then there these they this to was will with""".split()
)
K1 = 0.9
B = 0.4

_WORD = re.compile(r"\w+(?:['’]\w+)*")
_POSSESSIVE = ("'s", "’s")


class EnglishAnalyzer:
    """Text → terms: the analysis named ``ANALYZER_ID``.

    Thread-safe: PyStemmer's stemmer objects are not, so each thread gets its own."""

    name = "snowball-english-v1"

    def __init__(self) -> None:
        self._local = threading.local()

    def _stemmer(self) -> Stemmer.Stemmer:
        stemmer = getattr(self._local, "stemmer", None)
        if stemmer is None:
            stemmer = self._local.stemmer = Stemmer.Stemmer("english")
        return stemmer

    def tokens(self, text: str) -> list[str]:
        """Lower-case word tokens, possessives and apostrophes dropped, stopwords removed."""
        out = []
        for token in _WORD.findall(text.lower()):
            if token.endswith(_POSSESSIVE):
                token = token[:-2]
            if "'" in token or "’" in token:
                token = token.replace("'", "").replace("’", "")
            if token not in STOPWORDS:
                out.append(token)
        return out

    def stem(self, token: str) -> str:
        return self._stemmer().stemWord(token)

    def terms(self, text: str) -> list[str]:
        """The stemmed tokens of ``text``, in order (repeats kept: they are term frequency)."""
        tokens = self.tokens(text)
        return self._stemmer().stemWords(tokens) if tokens else []


_ANALYZER = EnglishAnalyzer()
ANALYZER_ID = _ANALYZER.name


def analyze(text: str) -> list[str]:
    """The terms of ``text`` under ``ANALYZER_ID``: what every lexical matcher compares."""
    return _ANALYZER.terms(text)


def tokenize(text: str) -> list[str]:
    """The tokens ``analyze`` stems (lower-case, no stopwords, no possessives)."""
    return _ANALYZER.tokens(text)


def stem(token: str) -> str:
    """Snowball English stem of one token from ``tokenize``."""
    return _ANALYZER.stem(token)


def bm25_scores(query: str, passages: list[str], k1: float = K1, b: float = B) -> list[float]:
    """BM25 of ``query`` against each passage over ``analyze``'s terms, with IDF computed over
    these passages only.

    A passage sharing no term with the query scores 0.0; one sharing a term scores above 0
    (this IDF is always positive)."""
    docs = [Counter(analyze(p)) for p in passages]
    if not docs:
        return []
    lengths = [sum(d.values()) for d in docs]
    avg_len = (sum(lengths) / len(docs)) or 1.0
    n = len(docs)
    scores = [0.0] * n
    for term in set(analyze(query)):
        df = sum(1 for d in docs if term in d)
        if df == 0:
            continue
        idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = d.get(term, 0)
            if tf:
                scores[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[i] / avg_len))
    return scores
