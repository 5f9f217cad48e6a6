"""Run a loaded sentence-transformers model's transformer on ONNX Runtime (CPU).

Only the transformer changes hands: texts are tokenised by the model's own ``preprocess``, and
its own pooling and normalisation modules turn the token embeddings into sentence vectors, so
the vectors equal the torch ones to float32 rounding (``tests/unit/test_onnx_runtime.py``)
and an index built with either runtime serves the other. The graph is exported from the loaded
weights at start-up (about a second for MiniLM), into memory: nothing is downloaded or cached
on disk, and torch's copy of the weights is released. On a small CPU, a short text takes about
half the time torch needs (BENCHMARKS.md).

``quantize="int8"`` quantises the exported graph with ONNX Runtime's dynamic quantisation
(int8 weights per output channel, activations quantised per call): about half the float32
time on a small CPU, vectors at a cosine of ~0.99 to the float32 ones. Not the same vectors: an
index is built and queried with one setting.
"""

from __future__ import annotations

import gc
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ragserve.embedding.heap import trim_heap
from ragserve.errors import ConfigurationError

__all__ = ["OnnxTransformer", "onnx_supported"]

log = logging.getLogger("ragserve.embedder")

OPSET = 17
SHRINK_AFTER_CHARS = 8_000  # a pass this large gives its activations back to the arena's owner
# The modules the exported path knows how to finish after the transformer.
_SUPPORTED_TAIL = {"Pooling", "Normalize"}


def onnx_supported(model: Any) -> str | None:
    """Why ``model`` (a SentenceTransformer) cannot run on ONNX Runtime here, or None."""
    names = [type(m).__name__ for m in model]
    if not names or names[0] != "Transformer":
        return f"the first module is {names[0] if names else 'missing'}, not a Transformer"
    unknown = [n for n in names[1:] if n not in _SUPPORTED_TAIL]
    if unknown:
        return f"modules after the transformer are not supported: {', '.join(unknown)}"
    return None


def _encoder(transformer: Any) -> Any:
    """The transformer's forward pass as ``(input_ids, attention_mask) -> token embeddings``."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask):
            return self.transformer(input_ids=input_ids,
                                    attention_mask=attention_mask).last_hidden_state

    return Encoder().eval()


def _quantize_int8(path: Path) -> Path:
    """The graph at ``path`` with int8 weights (per output channel; signed, as the CPU's int8
    dot-product instructions take) and activations quantised at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = path.with_name(path.stem + ".int8.onnx")
    root = logging.getLogger()
    advice = _QuietQuantizer()  # it logs a line per tensor, and advice, on the root logger
    root.addFilter(advice)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.removeFilter(advice)
    path.unlink()
    return out


class _QuietQuantizer(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or record.levelno >= logging.ERROR


class OnnxTransformer:
    """``encode(texts)`` for a loaded float32 SentenceTransformer on CPU; thread-safe (ONNX
    Runtime sessions run concurrent calls), each call on ``threads`` intra-op threads."""

    def __init__(self, model: Any, threads: int = 1, quantize: str = "none") -> None:
        import onnxruntime as ort
        import torch

        reason = onnx_supported(model)
        if reason:
            raise ConfigurationError(f"runtime 'onnx' cannot run this model: {reason}")
        self._model = model
        self._tail = list(model)[1:]
        self._per_text = False
        hf = getattr(model[0], "auto_model", None) or model[0].model
        sample = model.preprocess(["an example sentence", "two"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads sleep instead of spinning: the cores are shared with the rest
        # of the graph (and with the other workers' calls).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The arena (ORT's allocator) is 15-25% faster than plain allocations here, but keeps
        # the largest batch's activations for good: a large pass shrinks it when it is done.
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        with tempfile.TemporaryDirectory(prefix="ragserve-onnx-") as folder:
            path = Path(folder) / "transformer.onnx"  # a file, not bytes: no copies in the heap
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer notes on shape-dependent branches
                torch.onnx.export(
                    _encoder(hf), (sample["input_ids"], sample["attention_mask"]), str(path),
                    input_names=["input_ids", "attention_mask"],
                    output_names=["token_embeddings"],
                    dynamic_axes={name: {0: "batch", 1: "tokens"}
                                  for name in ("input_ids", "attention_mask", "token_embeddings")},
                    opset_version=OPSET, dynamo=False,
                )
            if quantize == "int8":
                path = _quantize_int8(path)
                self._per_text = True
            elif quantize != "none":
                raise ConfigurationError(f"unknown quantize {quantize!r}: 'none' or 'int8'")
            size = path.stat().st_size
            self._session = ort.InferenceSession(str(path), options,
                                                 providers=["CPUExecutionProvider"])
        # The session holds its own copy of the weights: free torch's (the tokenizer, pooling
        # and normalisation the model keeps using hold none), and give the heap back.
        hf.to("meta")
        gc.collect()
        trim_heap()
        log.info("embedder transformer exported to ONNX (%s, %d bytes), %d thread(s) per call",
                 quantize if quantize != "none" else "float32", size, threads)

    def encode(self, texts: list[str], normalize: bool) -> np.ndarray:
        if self._per_text and len(texts) > 1:
            # Dynamic quantisation scales activations over the whole input tensor, so in one
            # run a text's vector would depend on the texts beside it (cosine down to ~0.98).
            # One run per text keeps each vector a function of its text alone, as the
            # embedding cache and cross-request batching require.
            return np.concatenate([self._encode([t], normalize) for t in texts])
        return self._encode(texts, normalize)

    def _encode(self, texts: list[str], normalize: bool) -> np.ndarray:
        import torch

        features = self._model.preprocess(texts)
        mask = features["attention_mask"]
        large = sum(len(t) for t in texts) >= SHRINK_AFTER_CHARS
        (tokens,) = self._session.run(None, {
            "input_ids": features["input_ids"].numpy().astype(np.int64, copy=False),
            "attention_mask": mask.numpy().astype(np.int64, copy=False),
        }, self._shrink if large else None)
        features["token_embeddings"] = torch.from_numpy(tokens)
        with torch.no_grad():
            for module in self._tail:
                features = module(features)
            vectors = features["sentence_embedding"]
            if normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors.numpy().astype(np.float32, copy=False)
