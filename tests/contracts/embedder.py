"""What every ``Embedder`` does, as tests that each implementation runs.

A concrete test class inherits ``EmbedderContract`` and supplies an ``embedder`` fixture: a
ready ``Embedder`` (``ragserve/embedding/base.py``; warmed up where that loads a model). Set
``normalised = False`` for one configured without unit-length vectors.

Vectors are compared within ``ATOL``: float32 rounding (the precision the cache stores) and the
padding of a batched model call move a float32 model's vectors far less (~1e-7 for MiniLM).
"""

from __future__ import annotations

import math

import pytest

from ragserve.embedding import Embedder
from ragserve.schemas import EmbedderInfo

__all__ = ["EmbedderContract", "TEXTS", "ATOL"]

ATOL = 1e-4
TEXTS = [
    "Volcanic eruptions eject magma and ash into the atmosphere.",
    "Coral reefs shelter a quarter of marine species.",
    "compiler",
    "A compiler translates source code into machine instructions, one pass at a time, "
    "and then links the objects it wrote into a single executable file.",
]
LONG_TEXT = "word " * 50_000  # 250,000 characters: past every model's token and character limit


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= ATOL for x, y in zip(a, b))


def _norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / ((_norm(a) * _norm(b)) or 1.0)


class EmbedderContract:
    """The ``Embedder`` protocol's promises, as tests."""

    normalised = True

    @pytest.fixture
    async def dimension(self, embedder) -> int:
        return (await embedder.info()).dimension

    def check_vectors(self, vectors, count: int, dimension: int) -> None:
        assert isinstance(vectors, list) and len(vectors) == count
        for v in vectors:
            assert isinstance(v, list) and len(v) == dimension
            assert all(isinstance(x, float) and math.isfinite(x) for x in v)
            if self.normalised:
                assert _norm(v) == pytest.approx(1.0, abs=1e-3)

    async def test_satisfies_the_protocol(self, embedder):
        assert isinstance(embedder, Embedder)

    async def test_info_describes_the_vectors(self, embedder):
        info = await embedder.info()
        assert isinstance(info, EmbedderInfo)
        assert info.model and info.dimension > 0
        assert await embedder.info() == info  # a description, not a per-call value

    async def test_one_vector_per_text_of_the_info_dimension(self, embedder, dimension):
        self.check_vectors(await embedder.embed(TEXTS, "passage"), len(TEXTS), dimension)
        self.check_vectors(await embedder.embed(TEXTS[:1], "passage"), 1, dimension)

    @pytest.mark.parametrize("kind", ["query", "passage"])
    async def test_query_and_passage_kinds_are_accepted(self, embedder, dimension, kind):
        self.check_vectors(await embedder.embed(TEXTS, kind), len(TEXTS), dimension)

    async def test_the_default_kind_is_passage(self, embedder):
        default = await embedder.embed(TEXTS[:2])
        passage = await embedder.embed(TEXTS[:2], "passage")
        assert all(_close(a, b) for a, b in zip(default, passage))

    async def test_vectors_come_back_in_input_order(self, embedder):
        alone = [(await embedder.embed([t], "passage"))[0] for t in TEXTS]
        order = list(range(len(TEXTS)))[::-1]
        together = await embedder.embed([TEXTS[i] for i in order], "passage")
        # Which single-text vector each row is closest to: order, not precision, is checked.
        closest = [max(range(len(alone)), key=lambda j: _cosine(row, alone[j])) for row in together]
        assert closest == order

    async def test_a_text_gets_the_same_vector_every_time(self, embedder):
        first = await embedder.embed(TEXTS, "query")
        again = await embedder.embed(TEXTS, "query")
        assert all(_close(a, b) for a, b in zip(first, again))
        twice = await embedder.embed([TEXTS[0], TEXTS[1], TEXTS[0]], "query")
        assert _close(twice[0], twice[2])

    async def test_a_vector_does_not_depend_on_the_other_texts_of_the_call(self, embedder):
        """Callers (the embedding cache, the deployment's cross-request batches) take a text's
        vector as a function of (model, kind, text): the same whatever it was batched with."""
        alone = [(await embedder.embed([t], "passage"))[0] for t in TEXTS]
        together = await embedder.embed(TEXTS, "passage")
        for i, (a, b) in enumerate(zip(alone, together)):
            worst = max(abs(x - y) for x, y in zip(a, b))
            assert worst <= ATOL, f"text {i}: batched vs alone differ by {worst:.4g}"

    async def test_no_texts_is_no_vectors(self, embedder):
        assert await embedder.embed([], "passage") == []
        assert await embedder.embed([], "query") == []

    async def test_a_very_long_text_is_truncated_not_refused(self, embedder, dimension):
        self.check_vectors(await embedder.embed([LONG_TEXT], "query"), 1, dimension)
        self.check_vectors(await embedder.embed([LONG_TEXT, TEXTS[0]], "passage"), 2, dimension)

    async def test_health_is_a_dict_naming_the_backend(self, embedder):
        health = await embedder.health()
        assert isinstance(health, dict)
        assert isinstance(health["backend"], str) and health["backend"]

