"""Long passages embedded whole (``long_passages: mean``): windows cut from the real MiniLM
tokenizer are verbatim, bounded and overlapping; the passage's vector is the normalised mean of
its windows' vectors; queries and short passages are untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragserve.config import EmbedderConfig
from ragserve.embedding import SentenceTransformerEmbedder
from ragserve.embedding.windows import WindowSplitter, Windows, pool_windows

ROOT = Path(__file__).resolve().parents[2]
LONG = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")[:9000]
SHORT = "Qdrant local mode keeps one writer per folder."


@pytest.fixture(scope="module")
def encoders():
    made = {}
    for mode in ("truncate", "mean"):
        e = SentenceTransformerEmbedder(EmbedderConfig(runtime="onnx", quantize="int8",
                                                       torch_threads=1, long_passages=mode))
        e.warm_up()
        made[mode] = e
    return made


def _pieces(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_windows_are_verbatim_bounded_overlapping_and_cover_the_text(encoders):
    tok = encoders["mean"].model.tokenizer
    windows = WindowSplitter(tok, 254, 32).split(LONG)
    assert len(windows) > 3
    position = 0
    for w in windows:
        assert _pieces(tok, w) <= 254
        found = LONG.find(w, max(0, position - len(w)))
        assert found >= 0, "a window is not a verbatim piece of the text"
        position = found + len(w)
    assert LONG.lstrip().startswith(windows[0]) and LONG.rstrip().endswith(windows[-1])
    for a, b in zip(windows, windows[1:]):  # consecutive windows share text
        tail = a[-40:]
        assert tail.split()[-1] in b[:400]
    assert WindowSplitter(tok, 254, 32).split(SHORT) == [SHORT]
    with pytest.raises(ValueError):
        WindowSplitter(tok, 32, 32)


def test_pool_is_the_normalised_mean_and_leaves_unexpanded_rows_alone():
    vectors = np.array([[1, 0], [0, 1], [3, 4]], dtype=np.float32)
    windows = Windows(["a1", "a2", "b"], [0, 0, 1], 2, weights=[3, 1, 5])
    pooled = pool_windows(vectors, windows, normalize=True)
    assert np.allclose(pooled, [[0.75 / 0.625 ** 0.5, 0.25 / 0.625 ** 0.5], [0.6, 0.8]])
    unweighted = pool_windows(vectors, Windows(["a1", "a2", "b"], [0, 0, 1], 2), normalize=False)
    assert np.allclose(unweighted, [[0.5, 0.5], [3, 4]])
    same = Windows(["a", "b", "c"], [0, 1, 2], 3)
    assert pool_windows(vectors, same, normalize=True) is vectors


def test_a_long_passage_is_the_mean_of_its_windows(encoders):
    mean, truncate = encoders["mean"], encoders["truncate"]
    got = mean.encode([SHORT, LONG, LONG], ["passage", "passage", "query"])
    cut = mean._windows_of.cut(LONG)
    assert mean._windows_of.size == 254  # MiniLM's 256 less [CLS] and [SEP]
    assert all(0 < n <= 254 for _, n in cut) and cut[0][1] == 254
    parts = truncate.encode([w for w, _ in cut], ["passage"] * len(cut))
    weights = np.array([n for _, n in cut], dtype=np.float32)
    want = (parts * weights[:, None]).sum(axis=0)
    want /= np.linalg.norm(want)
    assert np.allclose(got[1], want, atol=1e-5)
    # a short passage and any query are encoded as before; the truncated vector differs
    before = truncate.encode([SHORT, LONG, LONG], ["passage", "passage", "query"])
    assert np.allclose(got[0], before[0], atol=1e-6) and np.allclose(got[2], before[2], atol=1e-6)
    assert float(got[1] @ before[1]) < 0.95
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_the_two_settings_are_different_vectors_for_the_cache(encoders):
    assert encoders["mean"].info().vectors_id != encoders["truncate"].info().vectors_id
    assert encoders["mean"].info().long_passages == "mean"
    assert encoders["truncate"].info().vectors_id.endswith("+int8")


def test_expand_cuts_only_what_it_is_told_to(encoders):
    tok = encoders["mean"].model.tokenizer
    w = WindowSplitter(tok, 254, 32).expand([LONG, LONG], [False, True])
    assert w.texts[0] == LONG and w.owner[0] == 0 and set(w.owner[1:]) == {1}
    assert w.inputs == 2 and w.expanded


def test_windows_are_cut_safely_while_other_threads_encode(encoders):
    # The model's tokenizer resets its truncation settings on every call; windows are cut with
    # a copy, so concurrent encodes of long passages neither fail nor change each other.
    from concurrent.futures import ThreadPoolExecutor

    mean = encoders["mean"]
    texts = [LONG[i * 500:] for i in range(8)]
    alone = [mean.encode([t], ["passage"])[0] for t in texts]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda t: mean.encode([t, SHORT], ["passage", "query"])[0], texts * 3))
    for i, v in enumerate(together):
        assert np.allclose(v, alone[i % len(texts)], atol=1e-5)
