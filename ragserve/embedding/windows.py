"""Passages longer than the embedding model's input: embedded whole, window by window.

A model such as MiniLM reads at most 256 word pieces and drops the rest, while the guide's
ingest chunks are 650–1,200 tokens (~1,000 word pieces): truncated, a chunk's vector stands for
its first quarter only, and a question answered further down finds it by its lexical half or
not at all. ``long_passages: mean`` cuts such a passage into overlapping windows that fit the
model, embeds every window, and gives the passage the normalised mean of its windows' vectors,
each weighted by the word pieces it holds (one vector per chunk, so the index, the cache and
``/v1/embeddings`` keep their shape).
Queries are short and are never cut. Measured against truncation, the plain mean and the max
over windows in ``docs/benchmarks/retrieval-quality.md``.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np

__all__ = ["WindowSplitter", "Windows", "pool_windows"]


class Windows:
    """Texts expanded into windows: ``texts`` to encode, ``owner[j]`` = the input ``texts[j]``
    came from (ascending: the windows of one input are contiguous and in order), ``weights[j]``
    = its word pieces (how much of the input it holds)."""

    def __init__(self, texts: list[str], owner: list[int], inputs: int,
                 weights: list[float] | None = None) -> None:
        self.texts, self.owner, self.inputs = texts, owner, inputs
        self.weights = weights if weights is not None else [1.0] * len(texts)

    @property
    def expanded(self) -> bool:
        return len(self.texts) != self.inputs


class WindowSplitter:
    """Cuts texts into windows of at most ``size`` word pieces of a fast (Rust) tokenizer.

    It tokenises with its own copy of the model tokenizer's Rust backend, truncation and
    padding off: the model's tokenizer sets those on every call, which is not safe while
    another thread encodes with it, and this copy is only read, so any thread may use it."""

    def __init__(self, tokenizer: Any, size: int, overlap: int) -> None:
        if size < 1 or not 0 <= overlap < size:
            raise ValueError(f"window size {size} with overlap {overlap}: "
                             "need 0 <= overlap < size")
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ValueError("long_passages 'mean' needs a fast (Rust) tokenizer")
        self._tok = copy.deepcopy(backend)
        self._tok.no_truncation()
        self._tok.no_padding()
        self.size, self.overlap = size, overlap

    def count(self, text: str) -> int:
        """Word pieces in ``text``, special tokens left out."""
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def split(self, text: str) -> list[str]:
        """``text`` as substrings of at most ``size`` word pieces each, consecutive ones
        sharing about ``overlap`` pieces; ``[text]`` when it fits. Cuts fall between words
        (at the tokenizer's character offsets), so every window is a verbatim piece of the
        text and tokenises to the same pieces it had inside the text."""
        return [w for w, _ in self.cut(text)]

    def cut(self, text: str) -> list[tuple[str, int]]:
        """``split``'s windows with the word pieces each holds."""
        enc = self._tok.encode(text, add_special_tokens=False)
        offsets, words = enc.offsets, enc.word_ids
        n, size, overlap = len(offsets), self.size, self.overlap
        if n <= size:
            return [(text, n)]

        def word_start(i: int) -> bool:  # piece i begins a word (a cut may fall before it)
            return i == 0 or i >= n or words[i] is None or words[i] != words[i - 1]

        out, start = [], 0
        while True:
            end = min(start + size, n)
            while end < n and end - start > overlap + 1 and not word_start(end):
                end -= 1  # never split a word at the end of a window
            out.append((text[offsets[start][0]:offsets[end - 1][1]], end - start))
            if end == n:
                return out
            nxt = max(start + 1, end - overlap)
            while nxt < end and not word_start(nxt):
                nxt += 1  # nor at the start of the next one
            start = nxt

    def expand(self, texts: Sequence[str], long: Sequence[bool]) -> Windows:
        """Every text whose ``long`` flag is set is cut into windows; the others stay whole."""
        flat: list[str] = []
        owner: list[int] = []
        weights: list[float] = []
        for i, (text, long_) in enumerate(zip(texts, long)):
            pieces = self.cut(text) if long_ else [(text, 1)]
            for window, count in pieces:
                flat.append(window)
                owner.append(i)
                weights.append(float(max(count, 1)))
        return Windows(flat, owner, len(texts), weights)


def pool_windows(vectors: np.ndarray, windows: Windows, normalize: bool) -> np.ndarray:
    """One row per input: the mean of its windows' rows weighted by their word pieces — as
    the model's own mean pooling weighs tokens, so a short tail window counts for what it
    holds (renormalised when ``normalize``)."""
    if not windows.expanded:
        return vectors
    owner = np.asarray(windows.owner)
    weights = np.asarray(windows.weights, dtype=np.float32)
    out = np.zeros((windows.inputs, vectors.shape[1]), dtype=np.float32)
    np.add.at(out, owner, vectors * weights[:, None])
    totals = np.bincount(owner, weights=weights, minlength=windows.inputs).astype(np.float32)
    out /= totals[:, None]
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.where(norms > 0, norms, 1.0)
    return out
