"""Grounding: an answer states only what its passages support, and cites them.

A model's answer is read sentence by sentence. Each sentence's content words (the shared
lexical analysis: ``ragserve.lexical``) are looked up in the passages it cites; a sentence
citing nothing is attributed to the passage that covers it best, and gets that passage's
``[n]``. A sentence is **supported** when the passage(s) it rests on hold at least
``min_support`` of its content words and every number it states; one made only of the
question's own words restates it and is never supported. Unsupported sentences are
dropped; an answer with no supported sentence left is not served as grounded: the generator
answers with the passages' own sentences instead (the extractive backend, always cited),
and the attempt list says why.

Streamed and non-streamed answers go through the same ``SentenceGate``: a sentence is
released once the next one has begun (or the answer ended), so both kinds of answer keep
exactly the same sentences.

Lexical coverage is a deliberately simple judge (no model to load, microseconds per sentence);
what it cannot see: a paraphrase with other words is dropped (precision over recall), and a
sentence that recombines the passage's words into a false claim passes. An NLI model would
catch the second; none installs offline here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ragserve.config import GroundingConfig
from ragserve.generation.prompt import extract_citations
from ragserve.passages import content_terms
from ragserve.schemas import ScoredChunk

__all__ = ["SentenceGate", "Grounded", "ground_answer", "split_answer"]

# A sentence ends at . ! ? (with any citation markers right after it: "… batches. [2]") and
# whitespace, or at a line break.
_END = re.compile(r"[.!?](?:\s*\[\s*\d+(?:\s*[-–,;]\s*\d+)*\s*\])*(?=\s)|\n")
_MARKER = re.compile(r"\[\s*\d+(?:\s*[-–,;]\s*\d+)*\s*\]")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w])")


def _pieces(text: str) -> list[str]:
    """``text`` cut after each sentence end (pieces keep their spacing)."""
    out, start = [], 0
    for m in _END.finditer(text):
        out.append(text[start:m.end()])
        start = m.end()
    out.append(text[start:])
    return out


def split_answer(text: str) -> list[str]:
    """Sentences of ``text``, markers kept with the sentence they follow."""
    return [s.strip() for s in _pieces(text) if s.strip()]


def _terms(text: str) -> set[str]:
    return content_terms(_MARKER.sub(" ", text))


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(_MARKER.sub(" ", text))}


@dataclass
class SentenceVerdict:
    text: str
    """The sentence as served (with its ``[n]``), or as written when dropped."""
    supported: bool
    passages: list[int]
    coverage: float
    claim: bool = True
    """False for a sentence too short to claim anything of its own ("Yes.")."""


@dataclass
class Grounded:
    """A checked answer: ``text`` keeps the supported sentences, each cited."""

    text: str
    sentences: list[SentenceVerdict] = field(default_factory=list)

    @property
    def dropped(self) -> list[SentenceVerdict]:
        return [s for s in self.sentences if not s.supported]

    @property
    def grounded(self) -> bool:
        return bool(self.text)

    def reason(self) -> str:
        if not self.sentences:
            return "empty answer"
        return (f"{len(self.dropped)} of {len(self.sentences)} sentence(s) not supported by "
                "the passages")


class _PassageIndex:
    def __init__(self, passages: list[ScoredChunk]) -> None:
        self.texts = [p.text for p in passages]
        self.terms = [_terms(t) for t in self.texts]
        self.numbers = [_numbers(t) for t in self.texts]


# Words a model uses to frame a restated question ("Question: …", "The answer is …").
_META = frozenset(_terms("question answer asked"))


def _judge(sentence: str, index: _PassageIndex, config: GroundingConfig,
           question: frozenset[str] = frozenset()) -> SentenceVerdict:
    terms = _terms(sentence)
    numbers = _numbers(sentence)
    n = len(index.texts)
    cited = extract_citations(sentence, n)
    if not terms and not numbers:  # a bare marker or punctuation says nothing
        return SentenceVerdict(sentence, False, cited, 0.0, claim=False)
    if terms - _META <= question and not numbers:
        # Only the question's own words ("Question: can I measure retrieval quality?"): it
        # restates what was asked and answers nothing, whatever it cites.
        return SentenceVerdict(sentence, False, cited, 0.0, claim=False)

    def coverage(ps: list[int]) -> float:
        if not terms:
            return 1.0
        have = set().union(*(index.terms[p - 1] for p in ps)) if ps else set()
        return len(terms & have) / len(terms)

    def numbers_ok(ps: list[int]) -> bool:
        have = set().union(*(index.numbers[p - 1] for p in ps)) if ps else set()
        return numbers <= have

    if len(terms) < config.min_terms and not numbers:
        # "Yes." / "It does." carry no claim of their own: kept when cited, never alone.
        return SentenceVerdict(sentence, bool(cited), cited, 1.0, claim=False)
    if cited and coverage(cited) >= config.min_support and numbers_ok(cited):
        return SentenceVerdict(sentence, True, cited, coverage(cited))
    # Uncited, or the cited passage does not hold it: the passage that covers it best.
    best, best_cov = 0, -1.0
    for p in range(1, n + 1):
        cov = coverage([p])
        if cov > best_cov and numbers_ok([p]):
            best, best_cov = p, cov
    if best and best_cov >= config.min_support and config.attribute_uncited:
        bare = re.sub(r"\s+([.!?,;:])", r"\1", _MARKER.sub("", sentence)).rstrip()
        return SentenceVerdict(f"{bare} [{best}]", True, [best], best_cov)
    return SentenceVerdict(sentence, False, cited, max(best_cov, coverage(cited)))


class SentenceGate:
    """Releases a streamed answer sentence by sentence, only the supported ones.

    ``feed(delta)`` returns the text that may be shown now, ``flush()`` what the end of the
    answer releases, ``verdict()`` the outcome. ``ground_answer`` runs the same gate over a
    whole answer at once."""

    def __init__(self, passages: list[ScoredChunk], config: GroundingConfig,
                 question: str = "") -> None:
        self.config = config
        self.index = _PassageIndex(passages)
        self.question = frozenset(_terms(question))
        self.buffer = ""
        self.verdicts: list[SentenceVerdict] = []
        self.released: list[str] = []

    def _release(self, sentence: str) -> str:
        verdict = _judge(sentence, self.index, self.config, self.question)
        self.verdicts.append(verdict)
        if not verdict.supported:
            return ""
        out = verdict.text if not self.released else " " + verdict.text
        self.released.append(verdict.text)
        return out

    def feed(self, delta: str) -> str:
        self.buffer += delta
        pieces = _pieces(self.buffer)
        # The last piece may still grow; so may the one before it while what follows is only
        # space or the start of a marker ("… batches. [" → "[2]" belongs to it).
        keep = 1
        if len(pieces) >= 2 and (not pieces[-1].strip() or pieces[-1].lstrip().startswith("[")):
            keep = 2
        done, self.buffer = pieces[:-keep], "".join(pieces[-keep:])
        return "".join(self._release(s.strip()) for s in done if s.strip())

    def flush(self) -> str:
        """The answer ended: judge what is left; returns the text released by it."""
        tail = "".join(self._release(s) for s in split_answer(self.buffer))
        self.buffer = ""
        return tail

    def verdict(self) -> Grounded:
        return Grounded(" ".join(self.released), self.verdicts)

    def hopeless(self, after: int | None) -> bool:
        """Nothing released yet and the first ``after`` claims (sentences with content words
        or numbers of their own) all unsupported: the answer is not worth reading on."""
        if after is None or self.released:
            return False
        claims = [v for v in self.verdicts if not v.supported and v.claim]
        return len(claims) >= after


def ground_answer(text: str, passages: list[ScoredChunk], config: GroundingConfig,
                  question: str = "") -> Grounded:
    gate = SentenceGate(passages, config, question)
    gate.feed(text)
    gate.flush()
    return gate.verdict()
