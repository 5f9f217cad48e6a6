"""How the embedder splits its CPU and its batches: worker plan, pass planning, and concurrent
passes giving the same vectors as one serial call (real bundled model)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ragserve.config import EmbedderConfig
from ragserve.embedding import SentenceTransformerEmbedder
from ragserve.embedding.sentence_transformers import plan_workers, split_passes


def test_cpu_workers_default_to_one_thread_each():
    assert plan_workers(None, 4, "cpu") == (4, 1)
    assert plan_workers(2, 4, "cpu") == (2, 2)
    assert plan_workers(1, 2, "cpu") == (1, 2)
    assert plan_workers(None, None, "cpu", default_threads=3) == (3, 1)  # torch's own count


def test_cuda_runs_one_call_at_a_time_unless_asked():
    assert plan_workers(None, None, "cuda") == (1, None)
    assert plan_workers(2, 4, "cuda") == (2, 4)


def test_workers_cannot_exceed_threads():
    with pytest.raises(ValueError, match="must not exceed torch_threads"):
        EmbedderConfig(torch_threads=2, workers=3)


def _check_spans(spans, n, max_size):
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(a < b and b - a <= max_size for a, b in spans)
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))


@pytest.mark.parametrize("n,max_size,workers", [(1, 16, 2), (5, 16, 2), (32, 16, 2), (100, 16, 4),
                                                (64, 128, 1), (7, 2, 3)])
def test_passes_cover_every_text_once_within_the_size_cap(n, max_size, workers):
    lengths = sorted(np.random.default_rng(n).integers(10, 1000, n).tolist(), reverse=True)
    spans = split_passes(lengths, max_size, workers, min_pass_chars=1)
    _check_spans(spans, n, max_size)
    if workers > 1:
        assert len(spans) >= min(2 * workers, n)
    else:
        assert len(spans) == -(-n // max_size)


def test_passes_are_balanced_by_padded_cost_not_count():
    lengths = [800] * 4 + [100] * 28  # four long texts, many short ones
    spans = split_passes(lengths, 32, 2, min_pass_chars=1)
    costs = [(b - a) * lengths[a] for a, b in spans]
    assert (spans[0][1] - spans[0][0]) < 8  # the long texts travel in a small pass
    assert max(costs) <= 2 * min(costs) + 800


def test_short_queries_stay_in_one_pass():
    assert split_passes([30] * 16, 32, 2) == [(0, 16)]
    assert len(split_passes([600] * 16, 32, 2)) == 4  # enough text: two passes per worker


def test_no_texts_no_passes():
    assert split_passes([], 16, 2) == []


@pytest.fixture(scope="module")
def two_workers():
    m = SentenceTransformerEmbedder(EmbedderConfig(torch_threads=2, workers=2, encode_batch_size=4))
    m.warm_up()
    return m


def test_concurrent_calls_give_the_serial_vectors(two_workers):
    texts = [f"passage {i} " + "about vector search and caching " * (i % 7) for i in range(24)]
    kinds = ["passage"] * len(texts)
    serial = two_workers.encode(texts, kinds)
    assert two_workers.health()["workers"] == 2
    with ThreadPoolExecutor(4) as ex:  # four callers at once, passes interleaved in the pool
        results = list(ex.map(lambda k: two_workers.encode(texts[k:] + texts[:k], kinds), range(4)))
    for k, got in enumerate(results):
        np.testing.assert_allclose(got, np.roll(serial, -k, axis=0), atol=1e-5)
