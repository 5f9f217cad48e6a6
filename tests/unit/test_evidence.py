"""The evidence inside passages (``ragserve.generation.evidence``): Markdown units (with a
chunk that begins inside a code block), lexical and semantic scores, and how the chain hands
semantic scores to the model's evidence and to the extractive answer."""

from __future__ import annotations

import pytest

from ragserve.config import (
    EmbedderConfig,
    EvidenceConfig,
    ExtractiveGeneratorConfig,
    GeneratorConfig,
)
from ragserve.embedding import SentenceTransformerEmbedder
from ragserve.errors import ConfigurationError
from ragserve.generation.chain import FallbackGenerator
from ragserve.generation.evidence import SemanticEvidenceScorer, combined_scores
from ragserve.generation.extractive import ExtractiveGenerator
from ragserve.generation.factory import build_generation_chain
from ragserve.passages import lexical_scores, passage_units, prose_sentences
from ragserve.schemas import GenerationRequest, ScoredChunk


def chunk(i: int, text: str, score: float = 1.0) -> ScoredChunk:
    return ScoredChunk(chunk_id=f"c{i}", doc_id=f"d{i}", chunk_index=0, text=text, score=score)


# ---------------------------------------------------------------- units


def test_units_have_kinds_in_order():
    doc = ("## Caching\n\nEmbeddings are kept 7 days. Query results 1 hour.\n\n"
           "| tier | ttl |\n|---|---|\n```python\nx = cache.get(key)\n```\n- Sessions: 30 min.\n")
    assert [(u.kind, u.text) for u in passage_units(doc)] == [
        ("heading", "Caching"),
        ("prose", "Embeddings are kept 7 days."),
        ("prose", "Query results 1 hour."),
        ("table", "| tier | ttl |"),  # the |---| rule carries no words: left out
        ("code", "x = cache.get(key)"),
        ("prose", "Sessions: 30 min."),
    ]


def test_a_chunk_that_begins_inside_a_code_block_reads_its_prose_as_prose():
    # Chunks overlap and are cut by tokens: this one starts in the middle of a ``` block.
    cut = ('vectors = embedder.embed.remote(["some text"], "passage").result()\n```\n\n'
           "The embedder batches concurrent requests into one model call.\n\n"
           "```bash\nmake serve\n```\n")
    units = passage_units(cut)
    assert units[0].kind == "code"
    assert prose_sentences(cut) == ["The embedder batches concurrent requests into one model call."]
    # bare fences, no info string anywhere: the code-looking start decides
    bare = 'app = serve.run(build_app())\n```\nThe ingress routes requests.\n'
    assert prose_sentences(bare) == ["The ingress routes requests."]
    # an even number of fences: the chunk starts outside a block
    even = "Run it like this.\n```\nmake test\n```\nIt installs what is missing.\n"
    assert prose_sentences(even) == ["Run it like this.", "It installs what is missing."]


def test_lexical_scores_weight_rare_shared_words_higher():
    units = [["The embedder batches requests.", "Unrelated words."],
             ["Requests go to the ingress."]]
    scores = lexical_scores("How does the embedder batch requests?", units)
    assert scores[0][0] > scores[1][0] > 0 and scores[0][1] == 0
    # "embedder" is in one passage of two, "request" in both: the rarer word counts more
    only_request = lexical_scores("requests", units)
    only_embedder = lexical_scores("embedder", units)
    assert only_embedder[0][0] > only_request[0][0]


def test_combined_scores_add_the_scaled_lexical_share_to_the_cosine():
    assert combined_scores([[2.0, 0.0]], None, 0.5) == [[2.0, 0.0]]
    assert combined_scores([[2.0, 1.0]], [[0.1, 0.3]], 0.5) == [[0.6, 0.55]]


# ---------------------------------------------------------------- the extractive answer


PASSAGES = [
    chunk(1, "Ingestion is idempotent: chunk ids come from the content. Deleting a document "
             "removes its chunks."),
    chunk(2, "Raw queries are never logged; logs carry a short hash. Access logs show each "
             "user's route and status."),
]
QUESTION = "Are user questions written to the logs?"


async def test_the_extractive_answer_follows_semantic_scores_when_the_request_has_them():
    gen = ExtractiveGenerator(ExtractiveGeneratorConfig(max_sentences=1))
    gen.warm_up()
    lexical = await gen.generate(GenerationRequest(query=QUESTION, passages=PASSAGES))
    units = [[u.text for u in passage_units(p.text)] for p in PASSAGES]
    scores = [[0.0] * len(u) for u in units]
    scores[1][0] = 0.9  # what a model would say: "questions" are "queries"
    semantic = await gen.generate(GenerationRequest(query=QUESTION, passages=PASSAGES,
                                                    evidence_scores=scores))
    assert semantic.text == "Raw queries are never logged; logs carry a short hash. [2]"
    # shared words alone pick the access-log sentence ("user", "log")
    assert lexical.text.startswith("Access logs show each user's route")
    # scores for other passages (another count of units) are ignored, never misaligned
    wrong = await gen.generate(GenerationRequest(query=QUESTION, passages=PASSAGES,
                                                 evidence_scores=[[0.9]]))
    assert wrong.text == lexical.text


class _Scorer:
    name = "fake"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls = 0

    def warm_up(self) -> None:
        pass

    def health(self) -> dict:
        return {"model": "fake", "loaded": True}

    def scores(self, query, units):
        self.calls += 1
        if self.fail:
            raise RuntimeError("scorer broke")
        return [[0.9 if "queries" in u else 0.0 for u in us] for us in units]


def _chain(scorer) -> FallbackGenerator:
    config = GeneratorConfig(backend=ExtractiveGeneratorConfig(max_sentences=1))
    chain = FallbackGenerator.from_backends(config, [ExtractiveGenerator(config)])
    chain.warm_up()
    chain.evidence_scorer = scorer
    return chain


async def test_the_chain_scores_once_and_every_backend_reads_the_scores():
    scorer = _Scorer()
    chain = _chain(scorer)
    whole = await chain.generate(GenerationRequest(query=QUESTION, passages=PASSAGES))
    assert whole.text.startswith("Raw queries are never logged") and scorer.calls == 1
    streamed = [x async for x in chain.stream(GenerationRequest(query=QUESTION,
                                                                passages=PASSAGES))]
    assert streamed[-1]["result"].text == whole.text and scorer.calls == 2


async def test_a_failing_scorer_leaves_the_lexical_answer():
    chain = _chain(_Scorer(fail=True))
    lexical = await _chain(None).generate(GenerationRequest(query=QUESTION, passages=PASSAGES))
    answer = await chain.generate(GenerationRequest(query=QUESTION, passages=PASSAGES))
    assert answer.text == lexical.text and answer.cited


def test_a_scorer_that_cannot_load_is_reported_and_left_out():
    config = GeneratorConfig(
        backend=ExtractiveGeneratorConfig(),
        evidence=EvidenceConfig(model=EmbedderConfig(model="/nonexistent/model/folder")))
    with pytest.raises(ConfigurationError, match="without a text encoder"):
        build_generation_chain(config)  # a model set, and nothing to load it with
    chain = build_generation_chain(config, text_encoder=SentenceTransformerEmbedder)
    chain.warm_up()  # the extractive backend still serves
    assert chain.evidence_scorer is None
    health = chain.health()["evidence_scorer"]
    assert health["model"] == "/nonexistent/model/folder" and health["error"]


# ---------------------------------------------------------------- the real model


@pytest.mark.slow
def test_the_bundled_minilm_finds_the_paraphrase_and_caches_unit_vectors():
    scorer = SemanticEvidenceScorer(EmbedderConfig(runtime="onnx", quantize="int8",
                                                   torch_threads=1),
                                    SentenceTransformerEmbedder, cache_size=4)
    units = [[u.text for u in passage_units(p.text)] for p in PASSAGES]
    scores = scorer.scores(QUESTION, units)
    flat = sorted(((s, u) for su, uu in zip(scores, units) for s, u in zip(su, uu)),
                  reverse=True)
    assert flat[0][1] == "Raw queries are never logged; logs carry a short hash."
    assert all(-1.0 <= s <= 1.0 for s, _ in flat)
    assert scorer.health()["cached_units"] == 4  # bounded: 4 units, the least recent out
    again = scorer.scores(QUESTION, units)
    assert [x for row in again for x in row] == pytest.approx(
        [x for row in scores for x in row], abs=1e-5)



async def test_the_extractive_answer_reads_the_passages_the_plan_kept_by_their_place():
    # the long, low-scored middle passage does not fit: the plan keeps the first and third,
    # numbered [1] and [2], and the answer quotes the third's sentence as [2]
    passages = [
        chunk(1, "Ingestion is idempotent: chunk ids come from the content.", 0.9),
        chunk(2, "Lighthouse keepers log the weather. " * 200, 0.1),
        chunk(3, "Raw queries are never logged; logs carry a short hash.", 0.8),
    ]
    gen = ExtractiveGenerator(ExtractiveGeneratorConfig(context_window=400, max_sentences=1))
    gen.warm_up()
    request = GenerationRequest(query="Are raw queries logged?", passages=passages,
                                max_tokens=64)
    plan = gen.plan(request)
    assert plan.indices == [0, 2] and plan.passages_dropped == 1
    answer = await gen.generate(request)
    assert answer.text == "Raw queries are never logged; logs carry a short hash. [2]"


# ---------------------------------------------------------------- whole sentences


WRAPPED = ("## Batching\n\n"
           "Every text is one batch item, so concurrent single-query embeddings\n"
           "share one model call. Large ingestion calls fill whole batches.\n\n"
           "- A list item that wraps\n  onto a second line.\n"
           "- Another item.\n")


def test_wrapped_prose_is_one_sentence_when_joined_and_lines_otherwise():
    lines = [u.text for u in passage_units(WRAPPED) if u.kind == "prose"]
    assert lines == ["Every text is one batch item, so concurrent single-query embeddings",
                     "share one model call.", "Large ingestion calls fill whole batches.",
                     "A list item that wraps", "onto a second line.", "Another item."]
    assert prose_sentences(WRAPPED) == [
        "Every text is one batch item, so concurrent single-query embeddings share one "
        "model call.",
        "Large ingestion calls fill whole batches.",
        "A list item that wraps onto a second line.",  # an item ends at the next item
        "Another item.",
    ]


async def test_the_extractive_answer_quotes_the_whole_sentence_a_wrapped_line_belongs_to():
    gen = ExtractiveGenerator(ExtractiveGeneratorConfig(max_sentences=1))
    gen.warm_up()
    answer = await gen.generate(GenerationRequest(
        query="Do concurrent single-query embeddings share a model call?",
        passages=[chunk(1, WRAPPED)]))
    # the best unit is the first line; the answer quotes its whole sentence, not the line
    assert answer.text == ("Every text is one batch item, so concurrent single-query embeddings "
                           "share one model call. [1]")


async def test_a_sentence_that_does_not_fit_leaves_room_for_the_next_best():
    # Rendered in passage order, but chosen best first: passage 1's sentence scores best
    # (it shares the most words) but alone overflows the budget, so it is skipped (not cut,
    # not ending the answer) and the next best, passages 2 and 3, still go in.
    passages = [
        chunk(1, "Redis keeps query results " + "for a long while and then some more " * 12 + "."),
        chunk(2, "Query results stay in Redis for one hour."),
        chunk(3, "Results expire."),
    ]
    gen = ExtractiveGenerator(ExtractiveGeneratorConfig(max_sentences=3))
    gen.warm_up()
    answer = await gen.generate(GenerationRequest(
        query="How long does Redis keep query results?", passages=passages, max_tokens=24))
    assert answer.text == "Query results stay in Redis for one hour. [2] Results expire. [3]"
    assert answer.finish_reason == "length"


async def test_the_retrievers_order_weighs_on_which_sentence_is_quoted_first():
    # Passage 2's sentence shares one question word more, but passage 1 ranks first: with
    # the default discount (the score over 1.25 for second place) passage 1's is quoted; with
    # none, passage order only breaks ties and passage 2's wins.
    passages = [
        chunk(1, "Cached query results and embeddings stay in the Redis store before expiry.",
              0.9),
        chunk(2, "Cached query results and embeddings stay in the Redis store before expiry "
                 "after each search.", 0.5),
    ]
    request = GenerationRequest(
        query="How long do cached query results and embeddings stay in the Redis store before "
              "expiry after a search?", passages=passages)
    ranked = ExtractiveGenerator(ExtractiveGeneratorConfig(max_sentences=1))
    flat = ExtractiveGenerator(ExtractiveGeneratorConfig(max_sentences=1, rank_discount=0.0))
    for gen in (ranked, flat):
        gen.warm_up()
    assert (await ranked.generate(request)).cited == [1]
    assert (await flat.generate(request)).cited == [2]


def test_a_line_is_matched_to_its_own_sentence_not_an_earlier_one_that_holds_it():
    from ragserve.generation.extractive import _sentences_of

    text = "Embeddings are cached for a week.\n\nAnswers are\ncached for a week.\n"
    units = passage_units(text)
    assert [u.text for u in units] == ["Embeddings are cached for a week.", "Answers are",
                                       "cached for a week."]
    sentences, sentence_of = _sentences_of(units, text)
    assert sentences == ["Embeddings are cached for a week.", "Answers are cached for a week."]
    # the third unit's text is inside the first sentence too, but it is a line of the second
    assert sentence_of == {0: 0, 1: 1, 2: 1}


def test_read_units_reads_a_text_once_as_passage_units_and_content_terms():
    from ragserve.passages import content_terms, read_units

    text = "# Cache\n\nEmbeddings are kept for 7 days.\n\n| tier | ttl |\n|---|---|\n| query | 1 h |"
    units, terms = read_units(text)
    assert list(units) == passage_units(text)
    assert [set(t) for t in terms] == [content_terms(u.text) for u in units]
    assert read_units(text) is read_units(text)  # the same chunk comes back: read once
