"""An answer made of the passages' own sentences: no model, no network, always available."""

from __future__ import annotations

import re
import time
from typing import AsyncIterator

from ragserve.config import ExtractiveGeneratorConfig, GeneratorConfig
from ragserve.generation.prompt import (
    NO_PASSAGES_ANSWER,
    PromptPlan,
    TiktokenBudgeting,
    evidence_of,
    looks_like_instruction,
)
from ragserve.passages import Unit, content_terms, prose_sentences
from ragserve.schemas import GenerationRequest, GenerationResult
from ragserve.tokens import get_encoding

__all__ = ["ExtractiveGenerator", "NO_PASSAGES_ANSWER"]


_WORDS_PER_DELTA = 4


def _render(picked: list[tuple[int, int, str]]) -> str:
    """(passage number, position, sentence) triples, in order, as text: consecutive sentences
    of one passage share one ``[n]``."""
    groups: list[tuple[int, list[str]]] = []
    for n, _, sentence in picked:
        if groups and groups[-1][0] == n:
            groups[-1][1].append(sentence)
        else:
            groups.append((n, [sentence]))
    return " ".join(f"{' '.join(sentences)} [{n}]" for n, sentences in groups)


def _sentences_of(units: list[Unit], text: str) -> tuple[list[str], dict[int, int]]:
    """``text``'s whole prose sentences, and for each prose unit (by its index in ``units``,
    the same text's line units) the sentence it is part of. Both read the text in order, so
    a unit is looked for from the sentence the unit before it was found in onwards: a short
    unit ("It is cached.") is never matched to an earlier sentence that happens to hold it."""
    sentences = prose_sentences(text)
    found: dict[int, int] = {}
    k = 0
    for j, u in enumerate(units):
        if u.kind != "prose":
            continue
        at = next((m for m in range(k, len(sentences)) if u.text in sentences[m]), None)
        if at is not None:
            found[j] = k = at
    return sentences, found


class ExtractiveGenerator(TiktokenBudgeting):
    """Answers with the passage sentences that bear most on the query (``evidence``: the
    question's IDF-weighted terms they share, plus their cosine to it when the chain has a
    semantic evidence scorer), each followed by its passage's ``[n]``.

    Passages go through the same context-window budget as the model backends, with tiktoken
    (``GeneratorConfig.token_encoding``) as the counter, so ``passages_used`` and the ``[n]``
    numbers mean the same thing whatever the backend. The best ``max_sentences`` units (the
    ones a model is shown; ties: the better-ranked passage, then the earlier unit) are quoted
    as the whole sentences they belong to (the docs are hard-wrapped: a unit is often a line
    of a sentence). They go in best first while they fit ``max_tokens`` (a sentence that does
    not fit is skipped; when none fits, the best is cut) and are emitted in passage order, one
    ``[n]`` after each run of sentences from passage n. Cheap and synchronous: ``warm_up``
    only loads the tiktoken encoding.
    """

    name = "extractive"

    def __init__(self, config: GeneratorConfig | ExtractiveGeneratorConfig) -> None:
        if isinstance(config, ExtractiveGeneratorConfig):
            config = GeneratorConfig(backend=config)
        if not isinstance(config.backend, ExtractiveGeneratorConfig):
            raise TypeError("ExtractiveGenerator needs an ExtractiveGeneratorConfig backend")
        self.config = config
        self.backend_config: ExtractiveGeneratorConfig = config.backend

    def health(self) -> dict:
        return {"model": None, "device": "cpu", "source": "extractive"}

    # ------------------------------------------------------------------ answer

    def _select(self, request: GenerationRequest,
                plan: PromptPlan) -> list[tuple[int, int, str]]:
        """Up to ``max_sentences`` (passage number, sentence position, sentence), best first:
        the prose units of the passages in ``plan`` (the units a model is shown, read from the
        whole passages) ranked by their evidence scores, discounted by their passage's place
        (``rank_discount``), each quoted as the whole sentence it is part of (wrapped lines
        joined). Nothing when no unit bears on the question."""
        ev = plan.evidence or evidence_of(request, self.config.evidence.lexical_weight)
        query_terms = content_terms(request.query)
        need = max(1.0, self.backend_config.min_query_coverage * len(query_terms))
        relevant = any(
            # Relevant only if some unit (a table row or code line counts) holds enough of
            # what the question asks about — one shared common word ("use", "run") is not an
            # answer — or, with semantic scores, says something close to it.
            max(ev.shared[i], default=0) >= need or (
                ev.semantic is not None
                and max(ev.semantic[i], default=-1.0) >= self.backend_config.min_similarity)
            for i in plan.indices)
        if not relevant:
            return []
        discount = self.backend_config.rank_discount
        candidates = [(ev.scores[i][j] / (1.0 + discount * (n - 1)), n, j, u.text)
                      for n, i in enumerate(plan.indices, start=1)
                      for j, u in enumerate(ev.units[i])
                      if u.kind == "prose" and ev.scores[i][j] > 0]
        # The better-ranked passage wins ties and, by ``rank_discount``, near-ties; then the
        # earlier unit.
        candidates.sort(key=lambda x: (-x[0], x[1], x[2]))
        whole: dict[int, tuple[list[str], dict[int, int]]] = {}
        picked: dict[tuple[int, int], str] = {}
        for _, n, j, unit in candidates:
            if len(picked) == self.backend_config.max_sentences:
                break
            # quote the whole sentence the unit is a line of (the docs are hard-wrapped)
            i = plan.indices[n - 1]
            if i not in whole:
                whole[i] = _sentences_of(ev.units[i], request.passages[i].text)
            sentences, sentence_of = whole[i]
            k = sentence_of.get(j)
            key, text = ((n, k), sentences[k]) if k is not None else ((n, len(sentences) + j), unit)
            # retrieved text is data: never echo an injection
            if key not in picked and not looks_like_instruction(text):
                picked[key] = text
        return [(n, k, text) for (n, k), text in picked.items()]

    def _answer(self, request: GenerationRequest) -> GenerationResult:
        plan = self.plan(request)
        finish = "stop"
        selected = self._select(request, plan) if plan.passages else []
        text = NO_PASSAGES_ANSWER if not selected else ""
        chosen: list[tuple[int, int, str]] = []
        # Best first, each sentence that still fits the answer's budget; rendered in passage
        # order, consecutive sentences of one passage sharing one marker: "A. B. [2]".
        for item in selected:
            rendered = _render(sorted([*chosen, item]))
            if self.count_tokens(rendered) > plan.max_tokens:
                finish = "length"
                continue
            chosen.append(item)
            text = rendered
        if selected and not chosen:  # even the best sentence is too long: cut it, keep its marker
            n, _, sentence = selected[0]
            text = self._truncate(sentence, f" [{n}]", plan.max_tokens)
        usage = plan.usage(plan.prompt_tokens, self.count_tokens(text))
        return plan.result(text, backend=self.name, usage=usage, finish_reason=finish)

    def _truncate(self, sentence: str, marker: str, max_tokens: int) -> str:
        """The longest whole-word start of ``sentence`` that fits with its marker."""
        enc = get_encoding(self.config.token_encoding)
        if self.count_tokens(marker) >= max_tokens:
            marker = ""  # a budget this small holds words or a marker, and words answer
        room = max_tokens - self.count_tokens(marker)
        cut = enc.decode(enc.encode(sentence, disallowed_special=())[:room])
        if len(cut) < len(sentence) and not sentence[len(cut)].isspace() and " " in cut.strip():
            cut = cut.rstrip().rsplit(" ", 1)[0]  # do not end on half a word
        cut = cut.rstrip()
        # Re-encoding a cut text can take a token more than the cut ids did.
        while cut and self.count_tokens(cut + marker) > max_tokens:
            cut = cut[:-1].rstrip()
        return f"{cut}{marker}".strip()

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        started = time.perf_counter()
        result = self._answer(request)  # the whole answer at once: its first text too
        result.first_token_ms = round((time.perf_counter() - started) * 1000, 2)
        return result

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        result = self._answer(request)
        pieces = re.findall(r"\S+\s*", result.text)
        for i in range(0, len(pieces), _WORDS_PER_DELTA):
            yield {"delta": "".join(pieces[i : i + _WORDS_PER_DELTA])}
        yield {"result": result}
