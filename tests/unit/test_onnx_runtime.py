"""The embedder's ONNX Runtime path: the same vectors as torch (real bundled model), in input
order under concurrent calls, and clear errors for what it cannot run."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ragserve.config import EmbedderConfig
from ragserve.embedding import SentenceTransformerEmbedder
from ragserve.embedding.onnx_runtime import onnx_supported
from ragserve.errors import ConfigurationError

TEXTS = [
    "What does the reranker fall back to when no cross-encoder loads?",
    "short",
    "A considerably longer passage about hybrid retrieval, BM25 term weights and dense vectors "
    "fused by distribution-based score fusion inside the vector store. " * 4,
    "  padded with spaces and MIXED case  ",
    "",
]


@pytest.fixture(scope="module")
def pair():
    torch_ = SentenceTransformerEmbedder(EmbedderConfig(torch_threads=2, workers=2))
    onnx_ = SentenceTransformerEmbedder(EmbedderConfig(torch_threads=2, workers=2, runtime="onnx"))
    torch_.warm_up()
    onnx_.warm_up()
    return torch_, onnx_


def test_onnx_vectors_equal_the_torch_ones(pair):
    torch_, onnx_ = pair
    kinds = ["query", "query", "passage", "passage", "query"]
    a, b = torch_.encode(TEXTS, kinds), onnx_.encode(TEXTS, kinds)
    assert b.dtype == np.float32 and b.shape == a.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(axis=1).min()) > 0.99999  # an index built by one serves the other


def test_onnx_keeps_order_under_concurrent_calls(pair):
    _, onnx_ = pair
    serial = onnx_.encode(TEXTS, ["passage"] * len(TEXTS))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: onnx_.encode(TEXTS, ["passage"] * len(TEXTS)), range(8)))
    for r in results:
        assert np.allclose(r, serial, atol=1e-5)


def test_onnx_reports_itself(pair):
    _, onnx_ = pair
    health = onnx_.health()
    assert health["runtime"] == "onnx" and health["device"] == "cpu"
    assert onnx_.name.endswith("+onnx") and onnx_.info().dimension == 384


def test_onnx_is_refused_on_a_gpu_or_in_half_precision():
    with pytest.raises(ValueError, match="runtime 'onnx' runs float32 on the CPU"):
        EmbedderConfig(runtime="onnx", device="cuda")
    with pytest.raises(ValueError, match="runtime 'onnx'"):
        EmbedderConfig(runtime="onnx", dtype="float16")


class _Module:
    def __init__(self, name):
        self.__class__ = type(name, (), {})


def test_models_with_other_modules_are_refused_with_the_reason():
    assert onnx_supported([_Module("Transformer"), _Module("Pooling"), _Module("Normalize")]) is None
    assert "Dense" in onnx_supported([_Module("Transformer"), _Module("Pooling"), _Module("Dense")])
    assert "CLIPModel" in onnx_supported([_Module("CLIPModel")])


def test_an_unsupported_model_fails_warm_up_with_a_configuration_error(monkeypatch):
    import ragserve.embedding.onnx_runtime as ort_mod

    monkeypatch.setattr(ort_mod, "onnx_supported", lambda model: "modules after the transformer "
                        "are not supported: Dense")
    emb = SentenceTransformerEmbedder(EmbedderConfig(torch_threads=1, runtime="onnx"))
    with pytest.raises(ConfigurationError, match="cannot run this model: .*Dense"):
        emb.warm_up()


def test_large_calls_give_their_heap_back(pair, monkeypatch):
    import ragserve.embedding.sentence_transformers as st

    calls = []
    monkeypatch.setattr(st, "trim_heap", lambda: calls.append(1) or True)
    for n, embedder in enumerate(pair):
        embedder.encode(["a short query"], ["query"])
        assert len(calls) == n  # small calls never pay for it
        embedder.encode(["word " * 1000] * 8, ["passage"] * 8)  # 40,000 characters
        assert len(calls) == n + 1


def test_trim_heap_runs_on_glibc():
    from ragserve.embedding.heap import trim_heap

    assert trim_heap() is True  # Linux/glibc, as on every machine this project runs on


def test_int8_is_close_to_float32_but_keyed_apart(pair):
    torch_, _ = pair
    int8 = SentenceTransformerEmbedder(EmbedderConfig(torch_threads=1, runtime="onnx",
                                                      quantize="int8"))
    int8.warm_up()
    kinds = ["query", "query", "passage", "passage", "query"]
    a, b = torch_.encode(TEXTS, kinds), int8.encode(TEXTS, kinds)
    assert b.dtype == np.float32 and b.shape == a.shape
    cos = (a * b).sum(axis=1)
    # Close enough to rank alike (SciFact: BENCHMARKS.md), not equal: a different cache key.
    assert cos.min() > 0.95 and cos.mean() > 0.98 and cos.min() < 0.99999
    info = int8.info()
    assert info.quantize == "int8" and int8.name.endswith("+onnx-int8")
    assert info.vectors_id != torch_.info().vectors_id and "int8" in info.vectors_id
    assert int8.health()["quantize"] == "int8"


def test_int8_needs_the_onnx_runtime():
    with pytest.raises(ValueError, match="quantize 'int8' needs runtime 'onnx'"):
        EmbedderConfig(quantize="int8")
    assert EmbedderConfig(runtime="onnx", quantize="int8").quantize == "int8"
