"""Answers held to their passages: the sentence judge, the gate a stream goes through, the
chain's fallback to cited passage sentences, and streamed and whole answers agreeing."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import pytest

from ragserve.config import ExtractiveGeneratorConfig, GeneratorConfig, GroundingConfig
from ragserve.generation.chain import FallbackGenerator
from ragserve.generation.extractive import ExtractiveGenerator
from ragserve.generation.grounding import SentenceGate, ground_answer, split_answer
from ragserve.generation.prompt import NO_PASSAGES_ANSWER, TiktokenBudgeting
from ragserve.schemas import GenerationRequest, GenerationResult, ScoredChunk

CFG = GroundingConfig()


def chunk(i: int, text: str, score: float) -> ScoredChunk:
    return ScoredChunk(chunk_id=f"c{i}", doc_id=f"d{i}", chunk_index=0, text=text, score=score)


PASSAGES = [
    chunk(1, "The embedder batches concurrent requests with serve.batch: up to 32 texts are "
             "grouped into one model call, waiting at most 5 ms for more.", 0.9),
    chunk(2, "Run the tests with make test; it creates the virtual environment first.", 0.8),
    chunk(3, "Qdrant local mode keeps the collection in a folder on disk.", 0.4),
]


def test_sentences_keep_their_markers():
    text = "It batches requests. [1] Then it waits 5 ms [1]. Done!\nNext line"
    assert split_answer(text) == ["It batches requests. [1]", "Then it waits 5 ms [1].",
                                  "Done!", "Next line"]


def test_supported_cited_sentence_is_kept_as_written():
    g = ground_answer("The embedder groups concurrent requests into one model call [1].",
                      PASSAGES, CFG)
    assert g.grounded and g.text == "The embedder groups concurrent requests into one model call [1]."
    assert not g.dropped


def test_invented_sentence_is_dropped_and_an_all_invented_answer_is_not_grounded():
    invented = "PyTorch's embedding_onnx function trains until the embedder finishes training [1]."
    g = ground_answer(invented, PASSAGES, CFG)
    assert not g.grounded and g.text == "" and len(g.dropped) == 1
    mixed = ground_answer(f"Run the tests with make test [2]. {invented}", PASSAGES, CFG)
    assert mixed.text == "Run the tests with make test [2]." and len(mixed.dropped) == 1


def test_uncited_or_miscited_sentence_gets_the_passage_that_holds_it():
    g = ground_answer("Run the tests with make test.", PASSAGES, CFG)
    assert g.text == "Run the tests with make test. [2]"
    wrong = ground_answer("Qdrant local mode keeps the collection on disk [1].", PASSAGES, CFG)
    assert wrong.text == "Qdrant local mode keeps the collection on disk. [3]"
    strict = ground_answer("Run the tests with make test.", PASSAGES,
                           GroundingConfig(attribute_uncited=False))
    assert not strict.grounded


def test_a_number_the_passage_does_not_state_is_unsupported():
    ok = ground_answer("The embedder waits at most 5 ms for more texts [1].", PASSAGES, CFG)
    assert ok.grounded
    bad = ground_answer("The embedder waits at most 50 ms for more texts [1].", PASSAGES, CFG)
    assert not bad.grounded


def test_a_claimless_sentence_needs_a_citation():
    assert ground_answer("Yes [2].", PASSAGES, CFG).grounded
    assert not ground_answer("Yes.", PASSAGES, CFG).grounded


def test_the_gate_releases_only_whole_checked_sentences():
    gate = SentenceGate(PASSAGES, CFG)
    shown = []
    for piece in ["Run the tests ", "with make test.", " [2", "] It was ", "invented by ",
                  "wizards in 1066. ", "Qdrant local mode keeps ", "the collection on disk"]:
        shown.append(gate.feed(piece))
    shown.append(gate.flush())
    assert shown[:3] == ["", "", ""]  # nothing before the sentence and its marker are complete
    assert "".join(shown) == gate.verdict().text == (
        "Run the tests with make test. [2] Qdrant local mode keeps the collection on disk [3]")
    assert len(gate.verdict().dropped) == 1


class ScriptedModel(TiktokenBudgeting):
    """A model backend that answers with a fixed text, streamed in small pieces (the logic
    under test is the chain's; the model's wording is the input)."""

    name = "scripted-model"

    def __init__(self, text: str) -> None:
        self.config = GeneratorConfig(backend=ExtractiveGeneratorConfig(), max_tokens_cap=64,
                                     default_max_tokens=64)
        self.text = text

    def health(self) -> dict:
        return {}

    def _result(self, request: GenerationRequest) -> GenerationResult:
        plan = self.plan(request)
        return plan.result(self.text, backend=self.name,
                           usage=plan.usage(plan.prompt_tokens, len(self.text.split())))

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return self._result(request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        for i in range(0, len(self.text), 7):
            yield {"delta": self.text[i:i + 7]}
        yield {"result": self._result(request)}


def chain(text: str, grounding: bool = True) -> FallbackGenerator:
    config = GeneratorConfig(backend=ExtractiveGeneratorConfig(), max_tokens_cap=64, default_max_tokens=64,
                             grounding=GroundingConfig(enabled=grounding))
    fallback = ExtractiveGenerator(config)
    gen = FallbackGenerator.from_backends(config, [ScriptedModel(text)],
                                          grounded_fallback=fallback)
    gen.warm_up()
    return gen


REQUEST = GenerationRequest(query="How does the embedder batch requests?", passages=PASSAGES)


async def both(gen: FallbackGenerator, request: GenerationRequest = REQUEST):
    whole = await gen.generate(request)
    deltas, streamed = [], None
    async for item in gen.stream(request):
        if "delta" in item:
            deltas.append(item["delta"])
        else:
            streamed = item["result"]
    return whole, "".join(deltas), streamed


async def test_an_invented_answer_is_replaced_by_cited_passage_sentences_in_both_modes():
    whole, shown, streamed = await both(chain(
        "PyTorch's embedding_onnx function trains the racket model until it finishes."))
    assert whole.backend == streamed.backend == "extractive"
    assert whole.text == streamed.text == shown and whole.cited == [1]
    assert "serve.batch" in whole.text
    assert [(a.backend, a.outcome) for a in whole.attempts] == [
        ("scripted-model", "ungrounded"), ("extractive", "ok")]
    assert "not supported" in whole.attempts[0].reason
    assert whole.usage.completion_tokens > 0  # what the model spent is still counted


async def test_a_partly_supported_answer_keeps_its_supported_sentences_in_both_modes():
    whole, shown, streamed = await both(chain(
        "The embedder groups concurrent requests into one model call. It was written in "
        "Fortran by NASA in 1969. Run the tests with make test [2]."))
    assert whole.text == streamed.text == shown == (
        "The embedder groups concurrent requests into one model call. [1] "
        "Run the tests with make test [2].")
    assert whole.cited == streamed.cited == [1, 2]
    assert whole.unsupported_sentences == streamed.unsupported_sentences == 1
    assert [a.outcome for a in whole.attempts] == ["ok"]


async def test_grounding_off_serves_the_model_text_as_it_is():
    text = "It was written in Fortran by NASA in 1969."
    whole, shown, streamed = await both(chain(text, grounding=False))
    assert whole.text == streamed.text == shown == text


async def test_nothing_relevant_indexed_gives_i_do_not_know_uncited():
    request = GenerationRequest(query="What is the capital of Peru?", passages=PASSAGES)
    whole, shown, streamed = await both(chain("The capital of Peru is Lima."), request)
    assert whole.text == streamed.text == shown == NO_PASSAGES_ANSWER
    assert whole.cited == []


async def test_max_tokens_above_the_cap_is_reduced_with_a_warning():
    request = REQUEST.model_copy(update={"max_tokens": 500})
    whole, _, streamed = await both(chain("Run the tests with make test [2]."), request)
    assert whole.warnings == streamed.warnings == [
        "max_tokens 500 reduced to this service's cap of 64"]
    assert (await chain("x").generate(REQUEST)).warnings == []


@pytest.mark.parametrize("text", ["", "   "])
async def test_an_empty_model_answer_is_not_grounded(text):
    whole = await chain(text).generate(REQUEST)
    assert whole.backend == "extractive" and whole.attempts[0].outcome == "ungrounded"


class LateModel(ScriptedModel):
    """Fails ``failures`` times, then answers after ``wait_s``, its first text coming then."""

    def __init__(self, text: str, wait_s: float, failures: int = 0) -> None:
        super().__init__(text)
        self.wait_s, self.failures = wait_s, failures

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        await asyncio.sleep(self.wait_s)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the model server went away")
        return self._result(request).model_copy(update={"first_token_ms": self.wait_s * 1000})

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        # the chain reads a gated whole answer from the stream (to stop a hopeless one early)
        await asyncio.sleep(self.wait_s)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the model server went away")
        async for item in super().stream(request):
            yield item


def late_chain(model: ScriptedModel) -> FallbackGenerator:
    config = GeneratorConfig.model_validate({
        "backend": {"backend": "extractive"}, "max_tokens_cap": 64, "default_max_tokens": 64,
        "retry": {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.01}})
    gen = FallbackGenerator.from_backends(config, [model],
                                          grounded_fallback=ExtractiveGenerator(config))
    gen.warm_up()
    return gen


async def test_a_whole_answer_s_first_text_is_timed_from_the_chain_s_start():
    supported = "The embedder groups concurrent requests into one model call [1]."
    answered = await late_chain(LateModel(supported, 0.05)).generate(REQUEST)
    assert answered.backend == "scripted-model"
    assert 50 <= answered.first_token_ms < 500
    # a failed try first: its time counts, the answer's own first text comes after it
    retried = await late_chain(LateModel(supported, 0.05, failures=1)).generate(REQUEST)
    assert retried.attempts[-1].tries == 2 and retried.first_token_ms >= 100
    # an ungrounded answer replaced: the served text came with the fallback, after the model
    replaced = await late_chain(LateModel("It was written in Fortran by NASA.", 0.05)).generate(
        REQUEST)
    assert replaced.backend == "extractive" and replaced.first_token_ms >= 50
    # the extractive backend alone: its whole answer is its first text
    alone = await ExtractiveGenerator(late_chain(ScriptedModel("")).config).generate(REQUEST)
    assert alone.first_token_ms is not None and alone.first_token_ms >= 0


# ---------------------------------------------------------------- through the pipeline


async def test_streamed_and_whole_responses_agree_through_the_pipeline():
    from ragserve.generation.in_process import InProcessGenerator
    from ragserve.pipeline import RAGPipeline, StageSet
    from ragserve.schemas import IngestRequest, QueryRequest
    from tests.fakes import FakeEmbedder, FakeReranker, MemoryRetriever

    for text in ("The embedder groups concurrent requests into one model call. It was written "
                 "in Fortran by NASA in 1969.",
                 "PyTorch's embedding_onnx function trains the racket model."):
        p = RAGPipeline(StageSet(embedder=FakeEmbedder(), retriever=MemoryRetriever(),
                                 reranker=FakeReranker(),
                                 generator=InProcessGenerator(chain(text))))
        await p.startup()
        await p.ingest(IngestRequest(documents=[{"id": f"d{i}", "text": c.text}
                                                for i, c in enumerate(PASSAGES)]))
        req = QueryRequest(query="How does the embedder batch requests?", max_tokens=500)
        whole = await p.query(req)
        events = [e async for e in p.query_events(req)]
        shown = "".join(d["delta"] for e, d in events if e == "token")
        done = events[-1][1]
        assert shown == done["answer"] == whole.answer
        assert done["citations"] == [c.model_dump(mode="json") for c in whole.citations]
        assert done["warnings"] == whole.warnings and done["degraded"] == whole.degraded
        assert "max_tokens 500 reduced to this service's cap of 64" in whole.warnings
        assert whole.answer and any(c.cited for c in whole.citations)
        assert done["timings"]["generate_ms"] > 0 and whole.timings.generate_ms > 0
    # the invented answer: replaced, flagged, and said so
    assert whole.degraded and whole.backends.generator == "extractive"
    assert any("not supported by the passages" in w for w in whole.warnings)


# ---------------------------------------------------------------- evidence selection


def test_evidence_keeps_the_sentences_that_bear_on_the_question_in_order():
    from ragserve.generation.prompt import evidence_of, select_evidence

    long = chunk(9, "Intro text here. The embedder batches requests with serve.batch. "
                    "Unrelated words follow.\nMore filler. Batches wait 5 ms for requests.", 1.0)
    request = GenerationRequest(query="How does the embedder batch requests?",
                                passages=[long, PASSAGES[0]])
    ev = evidence_of(request, lexical_weight=0.5)
    assert ev.semantic is None and ev.shared[0] == [0, 3, 0, 0, 2]
    cut = select_evidence(long, [u.text for u in ev.units[0]], ev.scores[0], 2)
    assert cut.text == ("… The embedder batches requests with serve.batch. … "
                        "Batches wait 5 ms for requests.")
    assert cut.chunk_id == long.chunk_id
    short = [u.text for u in ev.units[1]]
    scores = ev.scores
    assert select_evidence(PASSAGES[0], short, scores[1], 2) is PASSAGES[0]  # short: as it is


async def test_the_model_sees_selected_sentences_and_the_response_cites_the_whole_passage():
    from ragserve.config import EvidenceConfig

    long = chunk(9, "The embedder batches requests with serve.batch. Chapter two covers the "
                    "history of the lighthouse keepers.", 1.0)
    request = REQUEST.model_copy(update={"passages": [long, *PASSAGES]})
    model = ScriptedModel("The embedder batches requests with serve.batch [1].")
    model.config = model.config.model_copy(update={"evidence": EvidenceConfig(
        sentences_per_passage=1)})
    plan = model.plan(request)
    assert plan.passages[0].text == "The embedder batches requests with serve.batch. …"
    assert "lighthouse" not in plan.messages[-1]["content"]
    model.config = model.config.model_copy(update={"evidence": EvidenceConfig()})
    assert "lighthouse" in model.plan(request).messages[-1]["content"]


# ---------------------------------------------------------------- extractive over Markdown


def test_extractive_sentences_skip_code_tables_and_headings():
    from ragserve.passages import prose_sentences

    doc = ("## Running\n\nRun the tests with make test. It installs what is missing.\n"
           "```bash\nmake test   # the whole suite\n```\n| a | b |\n|---|---|\n"
           "- Each stage scales on its own.\n    indented code line\n")
    assert prose_sentences(doc) == ["Run the tests with make test.",
                                    "It installs what is missing.",
                                    "Each stage scales on its own."]


async def test_one_shared_common_word_is_not_relevance():
    gen = ExtractiveGenerator(ExtractiveGeneratorConfig())
    gen.warm_up()
    far = await gen.generate(GenerationRequest(
        query="What is the capital of Australia and its population?", passages=PASSAGES))
    assert far.text == NO_PASSAGES_ANSWER and far.cited == []
    near = await gen.generate(GenerationRequest(query="How do I run the tests?",
                                                passages=PASSAGES))
    assert near.cited == [2] and "make test" in near.text


# ---------------------------------------------------------------- stopping a hopeless answer


class CountingModel(ScriptedModel):
    """Streams its text word by word and records how far it got before being stopped."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.sent = 0
        self.closed = False

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        try:
            for word in self.text.split(" "):
                self.sent += 1
                yield {"delta": word + " "}
            yield {"result": self._result(request)}
        finally:
            self.closed = True


def counting_chain(model: CountingModel, stop_after: int | None = 2) -> FallbackGenerator:
    config = GeneratorConfig(backend=ExtractiveGeneratorConfig(), max_tokens_cap=64,
                             default_max_tokens=64,
                             grounding=GroundingConfig(stop_after_unsupported=stop_after))
    gen = FallbackGenerator.from_backends(config, [model],
                                          grounded_fallback=ExtractiveGenerator(config))
    gen.warm_up()
    return gen


INVENTED = ("PyTorch trains the racket model nightly. It was written in Fortran by NASA. "
            "Lighthouse keepers tune its weights by hand. " * 5)


@pytest.mark.parametrize("mode", ["whole", "stream"])
async def test_an_answer_whose_first_two_claims_are_unsupported_is_stopped_and_replaced(mode):
    model = CountingModel(INVENTED)
    gen = counting_chain(model)
    if mode == "whole":
        result = await gen.generate(REQUEST)
        shown = result.text
    else:
        items = [x async for x in gen.stream(REQUEST)]
        result = items[-1]["result"]
        shown = "".join(x["delta"] for x in items if "delta" in x)
    words = len(INVENTED.split(" "))
    assert model.closed and model.sent < words / 3  # decoding stopped after two sentences
    assert result.backend == "extractive" and shown == result.text and "serve.batch" in result.text
    assert [(a.backend, a.outcome) for a in result.attempts] == [
        ("scripted-model", "ungrounded"), ("extractive", "ok")]
    assert result.usage.completion_tokens > 0  # what the model spent before it was stopped
    # stopping early off: the whole answer is read (as a whole), with the same outcome
    late = await counting_chain(CountingModel(INVENTED), stop_after=None).generate(REQUEST)
    assert late.text == result.text and late.attempts[0].outcome == "ungrounded"
    assert late.unsupported_sentences > result.unsupported_sentences >= 2


async def test_a_supported_first_sentence_keeps_the_whole_answer_read():
    text = ("The embedder groups concurrent requests into one model call [1]. It was written "
            "in Fortran by NASA. Lighthouse keepers tune it by hand. Run the tests with make "
            "test [2].")
    model = CountingModel(text)
    result = await counting_chain(model).generate(REQUEST)
    assert model.sent == len(text.split(" "))
    assert result.backend == "scripted-model" and result.cited == [1, 2]
    assert result.unsupported_sentences == 2


def test_a_sentence_with_no_claim_of_its_own_does_not_count_toward_stopping():
    gate = SentenceGate(PASSAGES, CFG)
    gate.feed("Sure. Okay. Fine. It was written in Fortran by NASA. ")
    assert not gate.hopeless(2)
    gate.feed("Lighthouse keepers tune it by hand. ")
    gate.flush()
    assert gate.hopeless(2) and not gate.hopeless(None)


def test_a_sentence_that_only_restates_the_question_is_not_an_answer():
    question = "How does the embedder batch requests?"
    echo = ground_answer("Question: how does the embedder batch requests? [1]", PASSAGES, CFG,
                         question)
    assert not echo.grounded and not echo.sentences[0].claim
    # the same words with something of its own, supported by the passage: kept
    real = ground_answer("The embedder batches requests with serve.batch [1].", PASSAGES, CFG,
                         question)
    assert real.grounded
