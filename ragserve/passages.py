"""A passage read as Markdown, unit by unit, and the question words each unit shares.

Core text analysis two stages use: the generator reads its passages unit by unit (the
evidence a model is shown, the sentences an extractive answer quotes:
``ragserve.generation.evidence``), and the reranker's ``best_part`` scorer judges a candidate
chunk by its best unit (``ragserve.reranking.lexical``).

**Units.** ``passage_units`` reads a passage as Markdown: prose sentences (a line break ends
one too: lists, short lines; ``prose_sentences`` joins wrapped lines into whole sentences, which
is what an answer quotes), table rows, code lines and headings, each with its kind. An
ingest chunk can begin inside a fenced code block (chunks overlap and are cut by tokens), so
the fence lines' parity is worked out from the chunk itself, not assumed: a fence with an
info string (```` ```bash ````) always opens a block; a chunk with an odd number of bare fences
and code-looking lines before the first one starts inside a block.

**Scores.** ``lexical_scores``: the question's content words (``content_terms``: the shared
analysis of ``ragserve.lexical`` without function words) a unit shares, each weighted by its
IDF over the passages scored together (no model, microseconds).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Sequence

from ragserve.lexical import stem, tokenize

__all__ = ["Unit", "UnitKind", "passage_units", "prose_sentences", "content_terms",
           "read_units", "lexical_scores", "unit_scores"]

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


@lru_cache(maxsize=4096)
def read_units(text: str) -> tuple[tuple[Unit, ...], tuple[frozenset[str], ...]]:
    """``text``'s line units and each one's ``content_terms``, read once per text: the same
    chunks come back for many questions, to the reranker's ``best_part`` scorer and to the
    generator's evidence alike. The last 4,096 texts are kept (thread-safe; immutable)."""
    units = tuple(passage_units(text))
    return units, tuple(frozenset(content_terms(u.text)) for u in units)


def prose_sentences(text: str) -> list[str]:
    """The whole prose sentences of ``text``, wrapped lines joined (what an answer may quote:
    statements, not layout)."""
    return [u.text for u in passage_units(text, join_wrapped=True) if u.kind == "prose"]


def lexical_scores(query: str, units: Sequence[Sequence[str]]) -> list[list[float]]:
    """Per passage, per unit: the IDF-weighted (over these passages) question content words
    the unit shares."""
    return unit_scores(content_terms(query), [[content_terms(u) for u in us] for us in units])


def unit_scores(wanted: set[str],
                terms: Sequence[Sequence[frozenset[str] | set[str]]]) -> list[list[float]]:
    """Per passage, per unit: the IDF-weighted (over these passages) words of ``wanted`` the
    unit's ``terms`` share (``content_terms`` of the question and of each unit)."""
    n_docs = max(1, len(terms))
    df: dict[str, int] = {}
    for ts in terms:
        for t in set().union(*ts) if ts else ():
            df[t] = df.get(t, 0) + 1
    return [[sum(math.log(1.0 + n_docs / df.get(t, 1)) for t in wanted & unit) for unit in ts]
            for ts in terms]
