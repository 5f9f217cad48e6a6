"""Sentence-transformers embedder backend.

Split the Infinity way: ``_prepare`` (prefix, truncate, sort by length), the model call, and
restoring the caller's order; a passage longer than the model's input is first cut into
windows whose vectors are averaged back into one (``ragserve.embedding.windows``). Sorting a batch by length keeps padding, and so wasted compute,
small when short queries and long passages share a batch.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ragserve.config import EmbedderConfig
from ragserve.devices import pick_device
from ragserve.embedding.heap import TRIM_AFTER_CHARS, trim_heap
from ragserve.embedding.windows import WindowSplitter, Windows, pool_windows
from ragserve.models import resolve_model
from ragserve.schemas import EmbedderInfo, InputKind

__all__ = ["SentenceTransformerEmbedder", "plan_workers", "split_passes"]

log = logging.getLogger("ragserve.embedder")


def plan_workers(workers: int | None, torch_threads: int | None, device: str,
                 default_threads: int = 1) -> tuple[int, int | None]:
    """(concurrent model calls, intra-op threads for each; None leaves torch's default).
    ``default_threads`` stands in for an unset ``torch_threads`` on CPU: torch's own count,
    which follows ``OMP_NUM_THREADS`` (Ray sets it to the replica's ``num_cpus``).

    On CPU, several one-thread calls beat one call on every thread: a parallel region waits
    for its slowest thread, and on a shared host that thread is often pre-empted. On CUDA the
    device does the work: one call at a time unless asked."""
    if device != "cpu":
        return workers or 1, torch_threads
    threads = torch_threads or default_threads
    workers = workers or threads
    return workers, max(1, threads // workers)


MIN_PASS_CHARS = 512  # below ~130 tokens a pass is mostly per-call overhead: do not split it


def split_passes(lengths: list[int], max_size: int, workers: int,
                 min_pass_chars: int = MIN_PASS_CHARS) -> list[tuple[int, int]]:
    """Cut texts sorted longest first (their ``lengths``) into contiguous ``(start, end)`` passes.

    A pass costs about its size times its longest text (everything is padded to it), so the
    passes are balanced by that cost, not by count: the pass of long texts holds fewer of them,
    and parallel workers finish together. At most ``max_size`` texts per pass; with several
    workers, up to two passes per worker when there is enough text (``min_pass_chars`` each),
    so the pool evens out what the cost estimate misses. A batch of short queries stays one
    pass: a model call has a fixed cost that many tiny passes would pay again and again."""
    n = len(lengths)
    if n == 0:
        return []
    lengths = [max(1, x) for x in lengths]
    spread = min(2 * workers, n, sum(lengths) // min_pass_chars) if workers > 1 else 1
    want = max(-(-n // max_size), spread, 1)

    def pack(limit: int) -> list[tuple[int, int]]:
        spans, start = [], 0
        while start < n:
            end = start + 1
            while end < n and end - start < max_size and (end + 1 - start) * lengths[start] <= limit:
                end += 1
            spans.append((start, end))
            start = end
        return spans

    lo, hi = lengths[0], max_size * lengths[0]  # the smallest cost that fits `want` passes
    while lo < hi:
        mid = (lo + hi) // 2
        if len(pack(mid)) <= want:
            hi = mid
        else:
            lo = mid + 1
    return pack(lo)


class SentenceTransformerEmbedder:
    """A ``TextEncoder``: a sentence-transformers model, any name or path.

    ``__init__`` only stores the config; ``warm_up()`` loads the model (seconds, CPU-bound).
    ``encode`` is synchronous and thread-safe: its passes run on a pool of ``workers`` threads
    sharing the weights, each on ``threads_per_worker`` intra-op threads. The embedder stage
    (``EmbedderDeployment``, or ``LocalEmbedder`` in process) runs it off the event loop.
    """

    def __init__(self, config: EmbedderConfig) -> None:
        self.config = config
        self._model = None
        self._device = "unloaded"
        self._dtype = "unloaded"
        self.workers = 1
        self.threads_per_worker: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._onnx = None  # an OnnxTransformer when config.runtime == "onnx"
        self._windows_of: WindowSplitter | None = None  # cuts long passages into windows

    @property
    def name(self) -> str:
        suffix = "+onnx" if self.config.runtime == "onnx" else ""
        suffix += "-int8" if self.config.quantize == "int8" else ""
        return f"sentence-transformers:{self.config.model}{suffix}"

    def warm_up(self) -> None:
        if self._model is not None:
            return
        import torch
        from sentence_transformers import SentenceTransformer

        device = "cpu" if self.config.runtime == "onnx" else pick_device(self.config.device)
        self.workers, self.threads_per_worker = plan_workers(
            self.config.workers, self.config.torch_threads, device, torch.get_num_threads())
        if self.threads_per_worker:
            # Global in torch: every worker thread runs its ops on this many threads.
            torch.set_num_threads(self.threads_per_worker)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embed-worker")
        dtype = self.config.dtype
        if dtype == "auto":
            dtype = "float16" if device == "cuda" else "float32"
        resolved = resolve_model(self.config.model)
        model = SentenceTransformer(
            resolved.path,
            device=device,
            model_kwargs={"dtype": getattr(torch, dtype)},
            local_files_only=resolved.source != "hub",
        )
        if self.config.max_seq_length:
            model.max_seq_length = self.config.max_seq_length
        model.eval()
        # One call before any concurrent ones: the tokenizer settles its truncation/padding
        # state here, so later calls from several threads only read it.
        model.encode(["warm up"], batch_size=1, show_progress_bar=False)
        if self.config.runtime == "onnx":
            from ragserve.embedding.onnx_runtime import OnnxTransformer

            self._onnx = OnnxTransformer(model, threads=self.threads_per_worker or 1,
                                         quantize=self.config.quantize)
            self._onnx.encode(["warm up"], self.config.normalize)
        self._windows_of = self._splitter(model)
        self._model, self._device, self._dtype = model, device, dtype
        self._source = resolved.source
        log.info("embedder loaded: %s from %s on %s/%s", self.config.model, resolved.source, device, dtype)

    def _splitter(self, model) -> WindowSplitter | None:
        """Cuts long passages into windows of the model's limit less its special tokens and
        the passage prefix; None when long passages are truncated."""
        if self.config.long_passages == "truncate" or not model.max_seq_length:
            return None
        # Counted with the splitter's own tokenizer: a call on the model's would reset its
        # truncation settings, which the warm-up call settled for the worker threads.
        probe = WindowSplitter(model.tokenizer, model.max_seq_length, 0)
        size = (model.max_seq_length - model.tokenizer.num_special_tokens_to_add(pair=False)
                - probe.count(self.config.passage_prefix))
        if size <= self.config.window_overlap:
            raise ValueError(f"window_overlap {self.config.window_overlap} leaves no room in "
                             f"windows of {size} word pieces")
        return WindowSplitter(model.tokenizer, size, self.config.window_overlap)

    @property
    def encode_batch_size(self) -> int:
        if self.config.encode_batch_size is not None:
            return self.config.encode_batch_size
        return 128 if self._device == "cuda" else 16

    @property
    def model(self):
        if self._model is None:
            raise RuntimeError("embedder not warmed up")
        return self._model

    def info(self) -> EmbedderInfo:
        model = self.model
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else model.get_sentence_embedding_dimension()
        return EmbedderInfo(
            model=self.config.model,
            dimension=int(dim),
            device=self._device,
            dtype=self._dtype,
            max_seq_length=model.max_seq_length,
            quantize=self.config.quantize,
            long_passages=self.config.long_passages,
        )

    def _prepare(self, texts: list[str], kinds: list[InputKind]) -> list[str]:
        prefix = {"query": self.config.query_prefix, "passage": self.config.passage_prefix}
        limit = self.config.max_input_chars
        return [prefix[k] + t[:limit] for t, k in zip(texts, kinds)]

    def encode(self, texts: list[str], kinds: list[InputKind]) -> np.ndarray:
        """Vectors (float32, one row per text, in input order).

        The texts are sorted by length and cut into passes (``split_passes``): at most
        ``encode_batch_size`` each, and at least one per worker, so a single large call keeps
        every worker busy and short texts are not padded to the longest. The passes of all
        concurrent calls share the worker pool."""
        if not texts:
            return np.zeros((0, self.info().dimension), dtype=np.float32)
        windows = self._windows(texts, kinds)
        prepared = self._prepare(windows.texts, [kinds[i] for i in windows.owner])
        order = sorted(range(len(prepared)), key=lambda i: len(prepared[i]), reverse=True)
        ordered = [prepared[i] for i in order]
        passes = split_passes([len(t) for t in ordered], self.encode_batch_size, self.workers)
        parts = list(self._pool.map(lambda span: self._encode_pass(ordered[span[0]:span[1]]), passes))
        vectors = np.concatenate(parts) if len(parts) > 1 else parts[0]
        out = np.empty_like(vectors, dtype=np.float32)
        out[order] = vectors
        if sum(len(t) for t in prepared) >= TRIM_AFTER_CHARS:
            trim_heap()  # or the pages of this call's activations stay with the process
        return pool_windows(out, windows, self.config.normalize)

    def _windows(self, texts: list[str], kinds: list[InputKind]) -> Windows:
        """Long passages cut into windows the model reads whole (``long_passages: mean``)."""
        limit = self.config.max_input_chars
        texts = [t[:limit] for t in texts]
        if self._windows_of is None:
            return Windows(texts, list(range(len(texts))), len(texts))
        return self._windows_of.expand(texts, [k == "passage" for k in kinds])

    def _encode_pass(self, texts: list[str]) -> np.ndarray:
        if self._onnx is not None:
            return self._onnx.encode(texts, self.config.normalize)
        return self.model.encode(
            texts,
            batch_size=len(texts),
            normalize_embeddings=self.config.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def health(self) -> dict:
        info = self.info()
        return {"backend": self.name, "source": getattr(self, "_source", None), **info.model_dump(),
                "runtime": self.config.runtime, "workers": self.workers,
                "threads_per_worker": self.threads_per_worker}
