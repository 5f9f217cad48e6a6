"""Token-aware chunking by content type.

Contract of :meth:`TokenChunker.split` (the unit tests check each point):

* **Size.** Every chunk, re-encoded on its own with the configured tiktoken encoding, has at
  most ``size`` tokens (``config.sizes[content_type].tokens``). The tolerance is 0: a chunk is
  measured after it is cut, and shortened if the re-encoding disagrees with the count taken
  from the whole text.
* **Coverage.** Chunks are stripped slices of the input in order; every non-whitespace
  character of the input lies in at least one chunk. Whitespace-only chunks never appear.
* **Overlap.** Each chunk after the first starts inside the previous one and shares about
  ``overlap * size`` tokens with it, always between ``max(0.10, overlap - 0.05)`` and
  ``min(0.20, overlap + 0.05)`` of ``size`` as counted in the whole text's encoding, with 2
  tokens of margin inside those bounds for sizes from about 40 tokens (so the shared text,
  re-encoded on its own, also lands inside them; the tests check this exactly on prose,
  Markdown, code and non-ASCII text). Text made mostly of long whitespace runs can come out a
  few tokens short once the shared text is stripped. The shared text starts on the coarsest
  natural boundary found in that window, else on a token boundary.
* **Short text** (≤ ``size`` tokens once stripped) gives exactly one chunk: the stripped text.
* **Deterministic**: the same text and config always give the same chunks.

How: the text is encoded once; all lengths are token counts read from the offsets of that one
encoding (bisect on character offsets), so no piece is re-encoded while it is cut. The text is
split on the coarsest separator level first (prose: blank lines, Markdown headings, sentence
ends, line breaks, spaces; code: blank lines before a top-level definition, blank lines, line
breaks, spaces); a piece longer than ``size`` minus the largest overlap is split on the next
level, and a piece with no separator left is cut by tokens. Pieces are packed greedily. When
the next piece does not fit and the chunk is less than half full, that piece is split further
so chunks stay well filled (a piece with no separator is always cut where the chunk is
full). The only re-encoding is one check per finished chunk, about one
more pass over the text in total.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Protocol

from ragserve.config import ChunkingConfig
from ragserve.ingest.ids import chunk_id, doc_hash
from ragserve.schemas import Chunk, ContentType, DocumentIn
from ragserve.tokens import get_encoding

if TYPE_CHECKING:
    import tiktoken

__all__ = ["TokenChunker", "TextSplitter", "chunk_document", "PROSE_SEPARATORS", "CODE_SEPARATORS"]

# Each level is a pattern whose match *ends* are the cut positions: a separator stays with the
# text before it. Levels run from the most to the least preferred boundary.
PROSE_SEPARATORS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\n(?:[ \t]*\n)+"),  # paragraph: blank line(s)
    re.compile(r"\n(?=#{1,6}[ \t])"),  # a Markdown heading line not preceded by a blank line
    re.compile(r"[.!?…]+[\"'”’)\]]*\s+|[。！？]+\s*"),  # sentence end
    re.compile(r"\n+"),  # line break
    re.compile(r"\s+"),  # word
)

_TOP_LEVEL = (
    r"(?:@|if __name__\b|(?:export[ \t]+)?(?:default[ \t]+)?(?:async[ \t]+)?"
    r"(?:def|class|function|fn|func|pub|impl|struct|enum|trait|interface|type|module"
    r"|const|let|var)\b)"
)
CODE_SEPARATORS: tuple[re.Pattern[str], ...] = (
    # blank line(s) before a top-level definition; comment lines right above it stay with it
    re.compile(r"\n(?:[ \t]*\n)+(?=(?:(?:#|//)[^\n]*\n)*" + _TOP_LEVEL + ")"),
    re.compile(r"\n(?:[ \t]*\n)+"),  # blank line(s), e.g. between methods
    re.compile(r"\n+"),  # line break
    re.compile(r"[ \t]+"),  # whitespace inside a very long line
)

_HEADING = re.compile(r"#{1,6}[ \t][^\n]*\Z")
# UTF-8 continuation bytes: deleting them leaves one byte per character start.
_CONTINUATION = bytes(range(0x80, 0xC0))
# Overlap bounds for any configured fraction (ChunkSize allows 0.10–0.20).
_MIN_OVERLAP, _MAX_OVERLAP, _OVERLAP_SPREAD, _MARGIN = 0.10, 0.20, 0.05, 2


class TextSplitter(Protocol):
    """What :func:`chunk_document` needs from a chunker."""

    def split(self, text: str, content_type: ContentType) -> list[str]: ...


class TokenChunker:
    """Splits text into token-bounded, overlapping chunks on natural boundaries.

    Holds only the validated config and the (cached) tiktoken encoding; safe to share between
    threads since each call keeps its state in a local :class:`_Job`.
    """

    def __init__(self, config: ChunkingConfig | None = None) -> None:
        self.config = config or ChunkingConfig()
        self._encoding = get_encoding(self.config.encoding)

    def size(self, content_type: ContentType | str) -> int:
        """Chunk size in tokens for a content type."""
        return self.config.sizes[ContentType(content_type)].tokens

    def count_tokens(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))

    def split(self, text: str, content_type: ContentType | str = ContentType.general) -> list[str]:
        """Chunks of ``text`` (see the module docstring for the guarantees)."""
        return [text[a:b] for a, b in self.split_spans(text, content_type)]

    def split_spans(
        self, text: str, content_type: ContentType | str = ContentType.general
    ) -> list[tuple[int, int]]:
        """Chunks as ``(start, end)`` character offsets into ``text``, in order.

        ``text[start:end]`` is the chunk; spans of consecutive chunks overlap.
        """
        stripped = text.strip()
        if not stripped:
            return []
        lead = len(text) - len(text.lstrip())
        content_type = ContentType(content_type)
        setting = self.config.sizes[content_type]
        tokens = self._encoding.encode_ordinary(stripped)
        if len(tokens) <= setting.tokens:
            return [(lead, lead + len(stripped))]
        separators = CODE_SEPARATORS if content_type is ContentType.code else PROSE_SEPARATORS
        job = _Job(
            text=stripped,
            offsets=_char_offsets(self._encoding, stripped, tokens),
            encoding=self._encoding,
            size=setting.tokens,
            overlap=setting.overlap,
            separators=separators,
            prose=content_type is not ContentType.code,
        )
        return [(lead + a, lead + b) for a, b in job.run()]


def chunk_document(doc: DocumentIn, chunker: TextSplitter, tenant: str = "default") -> list[Chunk]:
    """Chunks of one document of ``tenant``, with deterministic ids (see
    :mod:`ragserve.ingest.ids`) and the document's ACL."""
    acl = sorted(set(doc.acl))
    hashed = doc_hash(doc.text, doc.content_type, doc.metadata, acl)
    return [
        Chunk(
            chunk_id=chunk_id(doc.id, text, index, tenant),
            tenant=tenant,
            acl=acl,
            doc_id=doc.id,
            chunk_index=index,
            text=text,
            content_type=doc.content_type,
            metadata=dict(doc.metadata),
            doc_hash=hashed,
        )
        for index, text in enumerate(chunker.split(doc.text, doc.content_type))
    ]


def _char_offsets(encoding: tiktoken.Encoding, text: str, tokens: list[int]) -> list[int]:
    """Character offset where each token starts, plus ``len(text)`` at the end.

    A token that starts inside a multi-byte character is given the offset of the next
    character, so that character belongs wholly to the token before.
    """
    pieces = encoding.decode_tokens_bytes(tokens)
    if text.isascii():
        lengths = map(len, pieces)
    else:
        lengths = (len(p.translate(None, _CONTINUATION)) for p in pieces)
    return [0, *accumulate(lengths)]


# A unit is (start token, end token, the separator level to use if it must be split further).
_Unit = tuple[int, int, int]


@dataclass
class _Job:
    """State of one ``split`` call: the text, its token offsets and the size settings."""

    text: str
    offsets: list[int]
    encoding: tiktoken.Encoding
    size: int
    overlap: float
    separators: tuple[re.Pattern[str], ...]
    prose: bool

    def __post_init__(self) -> None:
        self.n_tokens = len(self.offsets) - 1
        self.token_level = len(self.separators)
        low = math.ceil(max(_MIN_OVERLAP, self.overlap - _OVERLAP_SPREAD) * self.size)
        high = math.floor(min(_MAX_OVERLAP, self.overlap + _OVERLAP_SPREAD) * self.size)
        if high - low >= 2 * _MARGIN:  # room for a margin: sizes from about 40 tokens up
            low, high = low + _MARGIN, high - _MARGIN
        self.overlap_low, self.overlap_high = low, high
        target = round(self.overlap * self.size)
        if self.overlap_low <= self.overlap_high:
            target = min(max(target, self.overlap_low), self.overlap_high)
        self.overlap_target = target
        # A unit this long fits after the longest overlap, so every chunk makes progress.
        self.room = max(1, self.size - max(self.overlap_high, target))

    # ------------------------------------------------------------------ token / char helpers

    def _token_at(self, char: int) -> int:
        """Index of the token containing ``char`` (its start when ``char`` is a boundary)."""
        return bisect_right(self.offsets, char) - 1

    def _cuts(self, level: int, first: int, last: int, *, pad: int = 0) -> list[int]:
        """Token indices in ``[first, last]`` where separator ``level`` ends a match."""
        lo, hi = self.offsets[first], self.offsets[last]
        pattern = self.separators[level]
        found: list[int] = []
        for match in pattern.finditer(
            self.text, max(0, lo - pad), min(len(self.text), hi + pad)
        ):
            char = match.end()
            if char < lo:
                continue
            if char > hi:
                break
            token = self._token_at(char)
            if first <= token <= last and (not found or token != found[-1]):
                found.append(token)
        return found

    def _blank(self, start: int, end: int) -> bool:
        return not self.text[self.offsets[start] : self.offsets[end]].strip()

    def _stripped(self, start: int, end: int) -> tuple[int, int]:
        a, b = self.offsets[start], self.offsets[end]
        piece = self.text[a:b]
        return a + len(piece) - len(piece.lstrip()), a + len(piece.rstrip())

    # ------------------------------------------------------------------ splitting

    def _units(self, start: int, end: int, level: int) -> list[_Unit]:
        """Split ``[start, end)`` at ``level`` (or the first finer level that cuts it);
        pieces longer than ``room`` are split further. Every unit returned is ≤ ``room``."""
        out: list[_Unit] = []
        self._split_into(start, end, level, out)
        return out

    def _split_into(self, start: int, end: int, level: int, out: list[_Unit]) -> None:
        cuts: list[int] = []
        while level < self.token_level:
            cuts = [t for t in self._cuts(level, start, end) if start < t < end]
            if cuts:
                break
            level += 1
        if not cuts:  # no separator left: cut by tokens
            for a in range(start, end, self.room):
                out.append((a, min(a + self.room, end), self.token_level))
            return
        bounds = [start]
        for cut in [*cuts, end]:
            # a whitespace-only piece (e.g. leading blank lines) joins its neighbour
            if self._blank(bounds[-1], cut) and len(bounds) > 1:
                bounds[-1] = cut
            else:
                bounds.append(cut)
        if len(bounds) > 2 and self._blank(bounds[0], bounds[1]):
            del bounds[1]
        for a, b in zip(bounds, bounds[1:]):
            if b - a > self.room:
                self._split_into(a, b, level + 1, out)
            else:
                out.append((a, b, level + 1))

    # ------------------------------------------------------------------ packing

    def run(self) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        stack = self._units(0, self.n_tokens, 0)[::-1]
        start = 0  # first token of the current chunk, overlap included
        content: list[_Unit] = []  # units new in the current chunk
        while stack:
            unit = stack[-1]
            a, b, level = unit
            if b - start <= self.size:
                content.append(stack.pop())
                continue
            filled = (content[-1][1] if content else start) - start
            if level == self.token_level and a < start + self.size:
                # no natural boundary left in this unit: cut it where the chunk is full
                cut = start + self.size
                stack[-1] = (cut, b, level)
                stack.append((a, cut, level))
                continue
            if not content or 2 * filled < self.size:
                # an under-filled chunk takes part of the next unit rather than closing early
                stack.pop()
                stack.extend(reversed(self._units(a, b, level)))
                continue
            start = self._close(start, content, stack, spans)
            content = []
        if content:
            self._close(start, content, stack, spans)
        return spans

    def _close(
        self, start: int, content: list[_Unit], stack: list[_Unit], spans: list[tuple[int, int]]
    ) -> int:
        """Emit the chunk ``[start, end of content)``; return where the next chunk starts."""
        if self.prose and len(content) > 1 and stack and self._is_heading(content[-1]):
            stack.append(content.pop())  # a heading goes with the section it introduces
        while True:
            end = content[-1][1]
            if self._blank(content[0][0], end):
                return end  # nothing new: emit no chunk, start the next one here
            a, b = self._stripped(start, end)
            excess = len(self.encoding.encode_ordinary(self.text[a:b])) - self.size
            if excess <= 0:
                break
            # re-encoding the cut-out piece disagreed with the whole-text count: shorten
            if len(content) > 1:
                stack.append(content.pop())
            else:
                u0, u1, _ = content[0]
                cut = max(u0 + 1, u1 - excess)
                content[0] = (u0, cut, self.token_level)
                stack.append((cut, u1, self.token_level))
        spans.append((a, b))
        return self._overlap_start(start, end)

    def _is_heading(self, unit: _Unit) -> bool:
        piece = self.text[self.offsets[unit[0]] : self.offsets[unit[1]]].strip()
        return bool(_HEADING.match(piece))

    def _overlap_start(self, start: int, end: int) -> int:
        """First token of the next chunk: a boundary about ``overlap_target`` before ``end``."""
        target = end - self.overlap_target
        first = max(end - self.overlap_high, start + 1)
        last = end - self.overlap_low
        if first > last:
            return min(max(target, start + 1), end)
        for level in range(self.token_level):
            cuts = self._cuts(level, first, last, pad=256)
            if cuts:
                return min(cuts, key=lambda t: (abs(t - target), t))
        return min(max(target, first), last)
