"""An answer made of the passages' own sentences: no model, no network, always available."""

from __future__ import annotations

import re
import time
from typing import AsyncIterator

from ragserve.config import ExtractiveGeneratorConfig, GeneratorConfig
from ragserve.generation.evidence import content_terms
from ragserve.generation.prompt import (
    NO_PASSAGES_ANSWER,
    PromptPlan,
    TiktokenBudgeting,
    evidence_of,
    looks_like_instruction,
)
from ragserve.schemas import GenerationRequest, GenerationResult
from ragserve.tokens import get_encoding

__all__ = ["ExtractiveGenerator", "NO_PASSAGES_ANSWER"]


_WORDS_PER_DELTA = 4


def _render(groups: list[tuple[int, list[str]]]) -> str:
    return " ".join(f"{' '.join(sentences)} [{n}]" for n, sentences in groups)


class ExtractiveGenerator(TiktokenBudgeting):
    """Answers with the passage sentences that bear most on the query (``evidence``: the
    question's IDF-weighted terms they share, plus their cosine to it when the chain has a
    semantic evidence scorer), each followed by its passage's ``[n]``.

    Passages go through the same context-window budget as the model backends, with tiktoken
    (``GeneratorConfig.token_encoding``) as the counter, so ``passages_used`` and the ``[n]``
    numbers mean the same thing whatever the backend. The best ``max_sentences`` sentences
    (ties: the better-ranked passage, then the earlier sentence) are emitted in passage order,
    one ``[n]`` after each run of sentences from passage n, and cut to ``max_tokens``. Cheap
    and synchronous: ``warm_up`` only loads the tiktoken encoding.
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

    def _select(self, request: GenerationRequest, plan: PromptPlan) -> list[tuple[int, str]]:
        """(passage number, sentence) pairs, in passage then sentence order: the prose
        sentences of the passages in ``plan`` (read whole, even when the plan shows a model
        only their best sentences), ranked by their evidence scores."""
        ev = plan.evidence or evidence_of(request, self.config.evidence.lexical_weight)
        query_terms = content_terms(request.query)
        need = max(1.0, self.backend_config.min_query_coverage * len(query_terms))
        candidates, relevant = [], False
        for n, i in enumerate(plan.indices, start=1):
            # Relevant only if some unit (a table row or code line counts) holds enough of
            # what the question asks about — one shared common word ("use", "run") is not an
            # answer — or, with semantic scores, says something close to it.
            relevant = relevant or max(ev.shared[i], default=0) >= need or (
                ev.semantic is not None
                and max(ev.semantic[i], default=-1.0) >= self.backend_config.min_similarity)
            # only prose is quoted; retrieved text is data: never echo an injection
            candidates += [(ev.scores[i][j], n, j, u.text) for j, u in enumerate(ev.units[i])
                           if u.kind == "prose" and ev.scores[i][j] > 0
                           and not looks_like_instruction(u.text)]
        if not relevant:
            return []
        # Ties in score go to the better passage (plan order), then the earlier sentence.
        candidates.sort(key=lambda x: (-x[0], x[1], x[2]))
        picked = sorted(candidates[: self.backend_config.max_sentences],
                        key=lambda x: (x[1], x[2]))
        return [(n, s) for _, n, _, s in picked]

    def _answer(self, request: GenerationRequest) -> GenerationResult:
        plan = self.plan(request)
        finish = "stop"
        selected = self._select(request, plan) if plan.passages else []
        if not selected:
            text = NO_PASSAGES_ANSWER
        else:
            # Consecutive sentences of one passage share one marker: "A. B. [2]".
            groups: list[tuple[int, list[str]]] = []
            text = ""
            for n, sentence in selected:
                if groups and groups[-1][0] == n:
                    candidate = groups[:-1] + [(n, [*groups[-1][1], sentence])]
                else:
                    candidate = [*groups, (n, [sentence])]
                rendered = _render(candidate)
                if self.count_tokens(rendered) > plan.max_tokens:
                    finish = "length"
                    if not groups:  # even one sentence is too long: cut it, keep the marker
                        text = self._truncate(sentence, f" [{n}]", plan.max_tokens)
                    break
                groups, text = candidate, rendered
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
