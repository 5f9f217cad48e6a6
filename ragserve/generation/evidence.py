"""The evidence inside a passage: its units (sentences, table rows, code lines) and how much
each bears on the question.

One splitter and one scorer serve every part of the generator stage that reads passages
sentence by sentence: the evidence a model is shown (``prompt.select_evidence``) and the
extractive answer (``extractive.ExtractiveGenerator``).

**Units.** ``passage_units`` reads a passage as Markdown: prose sentences (a line break ends
one too: lists, short lines; ``prose_sentences`` joins wrapped lines into whole sentences, which
is what an answer quotes), table rows, code lines and headings, each with its kind. An
ingest chunk can begin inside a fenced code block (chunks overlap and are cut by tokens), so
the fence lines' parity is worked out from the chunk itself, not assumed: a fence with an
info string (```` ```bash ````) always opens a block; a chunk with an odd number of bare fences
and code-looking lines before the first one starts inside a block.

**Scores.** ``lexical_scores``: the question's content words a unit shares, each weighted by
its IDF over the request's passages (no model, microseconds). ``SemanticEvidenceScorer``
adds the cosine between the question and each unit under a sentence-embedding model (an
``EmbedderConfig`` and the embedder stage's own encoder class, handed in where the stages are
composed: ``deployments/generator.py``; stage packages never import each other), with unit
vectors kept in a bounded in-process cache, since the same passages come back for many
questions. A paraphrase ("questions" for "queries") is found only by the second.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np

from ragserve.config import EmbedderConfig, EvidenceConfig
from ragserve.errors import ConfigurationError
from ragserve.lexical import stem, tokenize

__all__ = [
    "Unit",
    "passage_units",
    "prose_sentences",
    "content_terms",
    "lexical_scores",
    "combined_scores",
    "Evidence",
    "read_evidence",
    "SemanticEvidenceScorer",
]

log = logging.getLogger("ragserve.generator")

UnitKind = Literal["prose", "table", "code", "heading"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_FENCE = re.compile(r"^\s*(```+|~~~+)\s*([^`\s]*)")
# A line that reads as code rather than prose (the text before a chunk's first fence).
_CODE_LINE = re.compile(r"[=(){};]|^\s*(?:\$ |>>> |#!|import |from \S+ import )|\\$")

# Words that carry no claim when matching a question or an answer sentence to a passage (the
# index keeps a short stopword list on purpose; BM25's IDF discounts these there, but a
# sentence-level overlap has no IDF to lean on).
_FUNCTION_WORDS = frozenset("""a about above after again against all also am an and any are as
at be because been before being below between both but by can could did do does doing down
during each either etc few for from further get gets got had has have having he her here hers
him his how i if in into is it its itself just let lets like may me might more most much must
my no nor not now of off on once one only or other our ours out over own per please same she
should so some such than that the their theirs them then there these they this those through
to too under until up upon us use used uses using very via was we were what when where which
while who whom why will with within without would you your yours""".split())


def content_terms(text: str) -> set[str]:
    """The stemmed words of ``text`` that can carry a claim: the shared analysis
    (``ragserve.lexical``) without function words and bare numbers."""
    return {stem(t) for t in tokenize(text)
            if t not in _FUNCTION_WORDS and not t.isdigit()}


@dataclass(frozen=True)
class Unit:
    text: str
    kind: UnitKind


def _starts_inside_fence(lines: list[str]) -> bool:
    """Whether the first line of ``lines`` lies inside a fenced block opened before it."""
    fences = [(i, m.group(2)) for i, line in enumerate(lines) if (m := _FENCE.match(line))]
    if not fences:
        return False
    for k, (_, info) in enumerate(fences):
        if info:  # only an opening fence carries an info string
            return k % 2 == 1
    if len(fences) % 2 == 0:
        return False
    before = [line for line in lines[: fences[0][0]] if line.strip()]
    return bool(before) and sum(bool(_CODE_LINE.search(x)) for x in before) * 2 >= len(before)


def passage_units(text: str, *, join_wrapped: bool = False) -> list[Unit]:
    """``text`` as the units an answer can rest on, in order: prose sentences, table rows,
    code lines (fences left out) and headings; blank lines and lines of only punctuation
    are left out.

    A line break ends a prose unit unless ``join_wrapped``: then prose wrapped over several
    lines (a paragraph, or one list item with its continuation lines) is joined first, so a
    sentence is whole however the file is wrapped. The model reads line units (shorter: its
    prompt is its first token's wait); an answer quotes whole sentences (``prose_sentences``).
    """
    lines = text.splitlines()
    fenced = _starts_inside_fence(lines)
    out: list[Unit] = []
    paragraph: list[str] = []

    def prose(joined: str) -> None:
        out.extend(Unit(x.strip(), "prose") for x in _SENTENCE_END.split(joined) if x.strip())

    def end_paragraph() -> None:
        if paragraph:
            prose(" ".join(paragraph))
            paragraph.clear()

    for line in lines:
        stripped = line.strip()
        if _FENCE.match(line):
            end_paragraph()
            fenced = not fenced
            continue
        if not stripped or not any(c.isalnum() for c in stripped):
            end_paragraph()
            continue
        if fenced or line.startswith("    "):
            end_paragraph()
            out.append(Unit(stripped, "code"))
        elif stripped.startswith("|"):
            end_paragraph()
            out.append(Unit(stripped, "table"))
        elif stripped.startswith("#"):
            end_paragraph()
            out.append(Unit(stripped.lstrip("#").strip(), "heading"))
        elif stripped.startswith("<!--"):
            end_paragraph()
        else:
            item = _BULLET.match(stripped)
            if item:  # a list item starts a paragraph of its own
                end_paragraph()
                stripped = stripped[item.end():]
            wordy = sum(c.isalpha() or c.isspace() for c in stripped)
            if wordy < 0.6 * len(stripped):
                end_paragraph()
                out.append(Unit(stripped, "code"))
            elif join_wrapped:
                paragraph.append(stripped)
            else:
                prose(stripped)
    end_paragraph()
    return out


def prose_sentences(text: str) -> list[str]:
    """The whole prose sentences of ``text``, wrapped lines joined (what an answer may quote:
    statements, not layout)."""
    return [u.text for u in passage_units(text, join_wrapped=True) if u.kind == "prose"]


def lexical_scores(query: str, units: Sequence[Sequence[str]]) -> list[list[float]]:
    """Per passage, per unit: the IDF-weighted (over these passages) question content words
    the unit shares."""
    return _lexical(content_terms(query), [[content_terms(u) for u in us] for us in units])


def _lexical(wanted: set[str], terms: list[list[set[str]]]) -> list[list[float]]:
    n_docs = max(1, len(terms))
    df: dict[str, int] = {}
    for ts in terms:
        for t in set().union(*ts) if ts else ():
            df[t] = df.get(t, 0) + 1
    return [[sum(math.log(1.0 + n_docs / df.get(t, 1)) for t in wanted & unit) for unit in ts]
            for ts in terms]


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
    units = [passage_units(t) for t in texts]
    if semantic is not None and [len(x) for x in semantic] != [len(x) for x in units]:
        semantic = None
    wanted = content_terms(query)
    terms = [[content_terms(u.text) for u in us] for us in units]
    lexical = _lexical(wanted, terms)
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
