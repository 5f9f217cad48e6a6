"""The evidence inside a passage: how much each of its units (``ragserve.passages``:
sentences, table rows, code lines) bears on the question.

One reading serves every part of the generator stage that reads passages sentence by
sentence: the evidence a model is shown (``prompt.select_evidence``) and the extractive answer
(``extractive.ExtractiveGenerator``).

**Scores.** ``ragserve.passages.lexical_scores``: the question's content words a unit shares,
each weighted by its IDF over the request's passages (no model, microseconds).
``SemanticEvidenceScorer`` adds the cosine between the question and each unit under a
sentence-embedding model (an ``EmbedderConfig`` and the embedder stage's own encoder class,
handed in where the stages are composed: ``deployments/generator.py``; stage packages never
import each other), with unit vectors kept in a bounded in-process cache, since the same
passages come back for many questions. A paraphrase ("questions" for "queries") is found only
by the second.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ragserve.config import EmbedderConfig, EvidenceConfig
from ragserve.errors import ConfigurationError
from ragserve.passages import Unit, content_terms, read_units, unit_scores

__all__ = [
    "combined_scores",
    "Evidence",
    "read_evidence",
    "SemanticEvidenceScorer",
]

log = logging.getLogger("ragserve.generator")


@dataclass(frozen=True)
class Evidence:
    """A request's passages read unit by unit, and how much each unit bears on the question."""

    units: list[list[Unit]]
    """Per passage, its units (``passage_units``)."""
    shared: list[list[int]]
    """Per passage, per unit: how many of the question's content words it holds."""
    scores: list[list[float]]
    """Per passage, per unit: the lexical score, plus the cosine when there is one."""
    semantic: list[list[float]] | None
    """Per passage, per unit: the cosine to the question; None without a scorer."""


def read_evidence(query: str, texts: Sequence[str],
                  semantic: list[list[float]] | None, lexical_weight: float) -> Evidence:
    """``texts`` (the passages, in order) read unit by unit and scored. ``semantic`` scores
    made for other passages (another count of units) are ignored, never misaligned."""
    read = [read_units(t) for t in texts]
    units = [list(us) for us, _ in read]
    if semantic is not None and [len(x) for x in semantic] != [len(x) for x in units]:
        semantic = None
    wanted = content_terms(query)
    terms = [ts for _, ts in read]
    lexical = unit_scores(wanted, terms)
    return Evidence(units=units, shared=[[len(wanted & t) for t in ts] for ts in terms],
                    scores=combined_scores(lexical, semantic, lexical_weight),
                    semantic=semantic)


def combined_scores(lexical: list[list[float]], semantic: list[list[float]] | None,
                    lexical_weight: float) -> list[list[float]]:
    """Semantic cosine plus ``lexical_weight`` × the lexical score scaled to the request's
    best (1.0); the lexical scores alone when there are no semantic ones."""
    if semantic is None:
        return lexical
    top = max((x for row in lexical for x in row), default=0.0) or 1.0
    return [[s + lexical_weight * (lx / top) for lx, s in zip(lrow, srow)]
            for lrow, srow in zip(lexical, semantic)]


class SemanticEvidenceScorer:
    """The cosine between a question and each unit under a sentence-embedding model.

    ``encoder_factory(config)`` builds the encoder (the embedder stage's ``TextEncoder``:
    ``warm_up()``, ``encode(texts, kinds)`` → unit vectors); unit vectors are cached by the
    SHA-256 of their text, at most ``cache_size`` of them (least recently used out first).
    Thread-safe: Serve runs ``warm_up`` and the scoring in worker threads."""

    def __init__(self, config: EmbedderConfig, encoder_factory: Callable[[EmbedderConfig], Any],
                 cache_size: int = 50_000) -> None:
        self.config = config
        self.encoder_factory = encoder_factory
        self.cache_size = cache_size
        self._encoder = None
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: EvidenceConfig,
                    encoder_factory: Callable[[EmbedderConfig], Any] | None,
                    ) -> "SemanticEvidenceScorer | None":
        """The configured scorer; None without a model. A model with no ``encoder_factory``
        to load it is a ``ConfigurationError``."""
        if config.model is None:
            return None
        if encoder_factory is None:
            raise ConfigurationError(
                "generator.config.evidence.model is set, but this generator was built without "
                "a text encoder to load it (build_generation_chain(..., text_encoder=...))")
        return cls(config.model, encoder_factory, cache_size=config.cache_size)

    @property
    def name(self) -> str:
        return self.config.model

    def warm_up(self) -> None:
        with self._lock:
            if self._encoder is None:
                encoder = self.encoder_factory(self.config)
                encoder.warm_up()
                self._encoder = encoder

    def health(self) -> dict:
        return {"model": self.config.model, "loaded": self._encoder is not None,
                "cached_units": len(self._cache)}

    def scores(self, query: str, units: Sequence[Sequence[str]]) -> list[list[float]]:
        """Per passage, per unit: cosine(question, unit)."""
        self.warm_up()
        flat = [u for us in units for u in us]
        keys = [hashlib.sha256(u.encode("utf-8")).digest() for u in flat]
        with self._lock:
            missing = {k: u for k, u in zip(keys, flat) if k not in self._cache}
            todo = list(missing.items())
            vectors = (self._encoder.encode([u for _, u in todo], ["passage"] * len(todo))
                       if todo else None)
            query_vector = self._encoder.encode([query], ["query"])[0]
            for i, (k, _) in enumerate(todo):
                self._cache[k] = np.asarray(vectors[i], dtype=np.float32)
            for k in keys:
                self._cache.move_to_end(k)
            matrix = (np.stack([self._cache[k] for k in keys]) if keys
                      else np.zeros((0, len(query_vector)), dtype=np.float32))
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        cos = matrix @ np.asarray(query_vector, dtype=np.float32)
        out, i = [], 0
        for us in units:
            out.append([float(x) for x in cos[i:i + len(us)]])
            i += len(us)
        return out
