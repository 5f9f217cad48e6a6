"""Properties of the token-aware chunker, checked with the real tiktoken encoding."""

from __future__ import annotations

import math
import random
import re
import time

import pytest

from ragserve.config import ChunkingConfig, ChunkSize
from ragserve.ingest.chunking import TokenChunker, chunk_document
from ragserve.ingest.ids import chunk_id, doc_hash
from ragserve.schemas import ContentType, DocumentIn
from ragserve.tokens import get_encoding

ENC = get_encoding("cl100k_base")
WORDS = (
    "the a service embeds passages with small model and stores vectors in an index for fast "
    "search replicas scale independently while batching keeps throughput high latency budget "
    "retrieval reranker generator answers questions citing sources carefully"
).split()


def _sentence(rng: random.Random, low: int = 4, high: int = 24) -> str:
    words = rng.choices(WORDS, k=rng.randint(low, high))
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"])


def _paragraph(rng: random.Random, sentences: tuple[int, int] = (1, 6)) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(*sentences)))


def prose(seed: int = 0, paragraphs: int = 400) -> str:
    """Paragraphs of sentences, a few far longer than a chunk."""
    rng = random.Random(seed)
    parts = []
    for i in range(paragraphs):
        parts.append(_paragraph(rng, (40, 60) if i % 97 == 13 else (1, 6)))
    return "\n\n".join(parts)


def markdown(seed: int = 1, sections: int = 120) -> str:
    rng = random.Random(seed)
    parts = []
    for s in range(sections):
        parts.append("#" * rng.randint(1, 3) + f" Section {s}: {rng.choice(WORDS)}")
        for _ in range(rng.randint(1, 4)):
            parts.append(_paragraph(rng))
        if s % 5 == 0:
            parts.append("```python\nclient.query('x')\n\nprint(result)\n```")
    return "\n\n".join(parts)


def python_code(seed: int = 2, functions: int = 150, max_lines: int = 25) -> str:
    rng = random.Random(seed)
    parts = ['"""A generated module."""\n\nimport os\nimport sys']
    for i in range(functions):
        body = "\n".join(
            f"    value_{j} = compute_{j}(arg, {j})  # step {j}"
            for j in range(rng.randint(2, max_lines))
        )
        if i % 7 == 0:
            parts.append(f"@decorator_{i}\ndef func_{i}(arg):\n{body}\n    return arg")
        elif i % 11 == 0:
            methods = "\n\n".join(
                f"    def method_{k}(self):\n        return self.value_{k}"
                for k in range(rng.randint(2, 6))
            )
            parts.append(f'class Thing{i}:\n    """Thing {i}."""\n\n{methods}')
        else:
            parts.append(f'def func_{i}(arg):\n    """Doc {i}."""\n{body}\n    return arg')
    return "\n\n\n".join(parts) + "\n"


def unicode_text(seed: int = 3) -> str:
    rng = random.Random(seed)
    pieces = ["日本語のテキストです。", "naïve café résumé.", "emoji 😀🎉 test.", "Ελληνικά κείμενο εδώ."]
    paragraphs = (
        " ".join(rng.choice(pieces) for _ in range(rng.randint(3, 40))) for _ in range(300)
    )
    return "\n\n".join(paragraphs)


def awkward(seed: int = 4) -> str:
    """Prose plus a paragraph without sentence ends and a 'word' thousands of tokens long."""
    rng = random.Random(seed)
    no_punct = " ".join(rng.choices(WORDS, k=3000))
    blob = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(20_000))
    return "\n\n".join([_paragraph(rng), no_punct, _paragraph(rng), blob, _paragraph(rng)])


def _unbroken(length: int, seed: int = 5) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("abcdefghij0123456789") for _ in range(length))


CASES = {
    "prose": (prose, ContentType.general),
    "prose-technical": (prose, ContentType.technical),
    "markdown": (markdown, ContentType.technical),
    "code": (python_code, ContentType.code),
    "unicode": (unicode_text, ContentType.general),
    "awkward": (awkward, ContentType.general),
    "unbroken": (lambda: _unbroken(60_000), ContentType.code),
}


@pytest.fixture(scope="module")
def chunker() -> TokenChunker:
    return TokenChunker(ChunkingConfig())


def _chunker(tokens: int, overlap: float) -> TokenChunker:
    """A chunker with the same size and overlap for every content type."""
    size = ChunkSize(tokens=tokens, overlap=overlap)
    return TokenChunker(ChunkingConfig(sizes={ct: size for ct in ContentType}))


def _tokens(text: str) -> int:
    return len(ENC.encode_ordinary(text))


def _locate(text: str, chunks: list[str]) -> list[tuple[int, int]]:
    """Find each chunk in the text, in order, without trusting the chunker's own offsets."""
    spans: list[tuple[int, int]] = []
    for chunk in chunks:
        start = text.find(chunk, spans[-1][0] + 1 if spans else 0)
        assert start >= 0, "a chunk is not a slice of the text after the previous chunk"
        spans.append((start, start + len(chunk)))
    return spans


@pytest.mark.parametrize("case", list(CASES))
def test_chunk_properties(chunker: TokenChunker, case: str) -> None:
    make, content_type = CASES[case]
    text = make()
    size = chunker.size(content_type)
    chunks = chunker.split(text, content_type)
    assert len(chunks) > 3, "the generated text should need several chunks"

    # size: every chunk re-encoded on its own fits, with no tolerance
    counts = [_tokens(c) for c in chunks]
    assert max(counts) <= size
    # no whitespace-only chunk, nothing left unstripped
    assert all(c.strip() and c == c.strip() for c in chunks)

    # coverage: chunks are in-order slices and everything between them is whitespace
    spans = _locate(text, chunks)
    assert spans == chunker.split_spans(text, content_type)
    assert not text[: spans[0][0]].strip() and not text[spans[-1][1] :].strip()
    for (a0, b0), (a1, b1) in zip(spans, spans[1:]):
        assert a0 < a1 and b0 < b1
        if a1 > b0:
            assert not text[b0:a1].strip(), "non-whitespace text fell between two chunks"

    # overlap: the next chunk starts inside the previous one, 10–20 % of the size
    low, high = math.ceil(0.10 * size), math.floor(0.20 * size)
    for (_, b0), (a1, _) in zip(spans, spans[1:]):
        assert a1 < b0
        assert low <= _tokens(text[a1:b0]) <= high

    # chunks are well filled (the last one may be short)
    assert min(counts[:-1]) >= size // 2


def test_non_whitespace_tokens_in_order(chunker: TokenChunker) -> None:
    text = prose(seed=11, paragraphs=150)
    chunks = chunker.split(text, ContentType.general)
    spans = _locate(text, chunks)
    # rebuild the text from the chunks by dropping each chunk's overlap with the previous one
    rebuilt = chunks[0]
    for (_, b0), (a1, b1), chunk in zip(spans, spans[1:], chunks[1:]):
        rebuilt += text[b0:a1] if a1 > b0 else ""
        rebuilt += chunk[b0 - a1 :] if a1 < b0 else chunk
    assert rebuilt.split() == text.split()
    assert [t for t in ENC.encode_ordinary(rebuilt)] == ENC.encode_ordinary(text.strip())


@pytest.mark.parametrize("content_type", list(ContentType))
def test_short_text_is_one_stripped_chunk(chunker: TokenChunker, content_type: ContentType) -> None:
    text = "\n\n  # Title\n\nA short note about batching.  \n\t\n"
    assert chunker.split(text, content_type) == [text.strip()]
    exact = " ".join(["word"] * (chunker.size(content_type) - 1))  # ≤ size tokens
    assert _tokens(exact) <= chunker.size(content_type)
    assert chunker.split(exact, content_type) == [exact]


def test_blank_text_gives_no_chunks(chunker: TokenChunker) -> None:
    assert chunker.split("", ContentType.general) == []
    assert chunker.split(" \n\t\n ", ContentType.code) == []


def test_sizes_follow_the_content_type(chunker: TokenChunker) -> None:
    text = prose(seed=5, paragraphs=200)
    biggest = {ct: max(_tokens(c) for c in chunker.split(text, ct)) for ct in ContentType}
    assert biggest[ContentType.code] <= 650 < biggest[ContentType.technical]
    assert biggest[ContentType.technical] <= 1000 < biggest[ContentType.general] <= 1200


def test_prose_breaks_on_paragraphs_and_overlaps_from_a_sentence_start(
    chunker: TokenChunker,
) -> None:
    # paragraphs are all far smaller than a chunk, so each chunk should end at a paragraph break
    rng = random.Random(21)
    text = "\n\n".join(_paragraph(rng) for _ in range(300))
    spans = chunker.split_spans(text, ContentType.general)
    for a, b in spans[:-1]:
        assert text[b : b + 2] == "\n\n", "a chunk ended inside a paragraph"
    for a, b in spans[1:]:
        # the overlap window always holds a sentence end, so the overlap starts a sentence
        assert re.search(r"(?:[.!?]\s+|\A)\Z", text[:a]), text[a - 20 : a + 20]
        assert text[a].isupper()


def test_markdown_chunks_do_not_end_with_a_heading(chunker: TokenChunker) -> None:
    text = markdown(seed=7, sections=200)
    chunks = chunker.split(text, ContentType.technical)
    for chunk in chunks[:-1]:
        last_line = chunk.rstrip().rsplit("\n", 1)[-1]
        assert not re.match(r"#{1,6} ", last_line), "a heading was cut off from its section"


def test_markdown_heading_without_blank_line_is_a_boundary() -> None:
    chunker = _chunker(120, 0.15)
    rng = random.Random(8)
    # one paragraph too big for a chunk, with headings directly under text lines
    section = lambda i: f"## Part {i}\n" + " ".join(rng.choices(WORDS, k=70))  # noqa: E731
    text = "\n".join(section(i) for i in range(8))
    spans = chunker.split_spans(text, ContentType.technical)
    ends = [b for _, b in spans[:-1]]
    assert all(text[b : b + 4] == "\n## " for b in ends), [text[b - 10 : b + 10] for b in ends]


def test_code_breaks_between_top_level_definitions(chunker: TokenChunker) -> None:
    text = python_code(seed=9, functions=200, max_lines=12)
    spans = chunker.split_spans(text, ContentType.code)
    assert len(spans) > 5
    for _, b in spans[:-1]:
        following = text[b:].lstrip("\n")
        assert text[b : b + 2] == "\n\n", "a chunk ended inside a definition"
        assert re.match(r"(def |class |@)", following), following[:40]
    for a, _ in spans:
        # chunks (including their overlap) start at the beginning of a line
        assert a == 0 or text[:a].rstrip(" \t").endswith("\n")


def test_long_definition_falls_back_to_line_breaks(chunker: TokenChunker) -> None:
    body = "\n".join(f"    total += weight_{i} * value_{i}  # term {i}" for i in range(600))
    text = f"def huge():\n    total = 0\n{body}\n    return total\n"
    spans = chunker.split_spans(text, ContentType.code)
    assert len(spans) > 3
    for a, b in spans:
        assert text[b : b + 1] in ("\n", ""), "cut inside a line"
        assert text[:a].rstrip(" \t").endswith("\n") or a == 0


def test_no_sentence_ends_falls_back_to_words(chunker: TokenChunker) -> None:
    text = " ".join(random.Random(10).choices(WORDS, k=6000))
    spans = chunker.split_spans(text, ContentType.general)
    assert len(spans) > 2
    for a, b in spans:
        assert a == 0 or text[a - 1] == " "
        assert b == len(text) or text[b] == " "


def test_unbroken_text_is_cut_by_tokens(chunker: TokenChunker) -> None:
    text = _unbroken(30_000, seed=12)
    chunks = chunker.split(text, ContentType.technical)
    assert len(chunks) > 2
    assert max(_tokens(c) for c in chunks) <= 1000
    assert min(_tokens(c) for c in chunks[:-1]) >= 900  # hard cuts fill the chunk


@pytest.mark.parametrize("overlap", [0.10, 0.15, 0.20])
@pytest.mark.parametrize("tokens", [96, 200, 500])
def test_configured_sizes_and_overlaps(tokens: int, overlap: float) -> None:
    chunker = _chunker(tokens, overlap)
    text = prose(seed=13, paragraphs=120)
    spans = chunker.split_spans(text, ContentType.general)
    assert max(_tokens(text[a:b]) for a, b in spans) <= tokens
    for (_, b0), (a1, _) in zip(spans, spans[1:]):
        shared = _tokens(text[a1:b0])
        assert math.ceil(0.10 * tokens) <= shared <= math.floor(0.20 * tokens)
        # close to the configured fraction, not merely inside the 10–20 % band
        assert abs(shared - overlap * tokens) <= 0.05 * tokens + 2


def test_deterministic() -> None:
    text = markdown(seed=14)
    first = TokenChunker().split(text, ContentType.technical)
    second = TokenChunker(ChunkingConfig()).split(text, ContentType.technical)
    assert first == second
    assert first == TokenChunker().split(text, "technical")


def test_one_megabyte_is_fast(chunker: TokenChunker) -> None:
    text = prose(seed=15, paragraphs=1)
    rng = random.Random(15)
    parts = []
    while sum(map(len, parts)) < 1_000_000:
        parts.append(_paragraph(rng))
    text = "\n\n".join(parts)
    chunker.split(text[:10_000], ContentType.general)  # warm the encoding cache
    started = time.perf_counter()
    chunks = chunker.split(text, ContentType.general)
    elapsed = time.perf_counter() - started
    assert len(chunks) > 150
    assert elapsed < 2.0, f"chunking 1 MB took {elapsed:.2f} s"


def test_chunk_document_builds_chunks_with_deterministic_ids(chunker: TokenChunker) -> None:
    text = markdown(seed=16, sections=40)
    doc = DocumentIn(
        id="docs/guide.md", text=text, content_type=ContentType.technical,
        metadata={"source": "docs/guide.md", "tags": ["a"]},
    )
    chunks = chunk_document(doc, chunker)
    texts = chunker.split(text, ContentType.technical)
    assert [c.text for c in chunks] == texts
    assert [c.chunk_index for c in chunks] == list(range(len(texts)))
    expected_hash = doc_hash(text, ContentType.technical, doc.metadata)
    for c in chunks:
        assert c.doc_id == "docs/guide.md"
        assert c.content_type is ContentType.technical
        assert c.metadata == doc.metadata and c.metadata is not doc.metadata
        assert c.doc_hash == expected_hash
        assert c.chunk_id == chunk_id(doc.id, c.text, c.chunk_index)
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    assert [c.chunk_id for c in chunk_document(doc, chunker)] == [c.chunk_id for c in chunks]


def test_chunk_document_keeps_identical_chunks_distinct() -> None:
    class Repeat:
        def split(self, text: str, content_type: ContentType) -> list[str]:
            return ["same text", "same text"]

    doc = DocumentIn(id="d1", text="same text same text")
    chunks = chunk_document(doc, Repeat())
    assert chunks[0].text == chunks[1].text
    assert chunks[0].chunk_id != chunks[1].chunk_id


FUZZ_PIECES = [
    "word", " ", "\n", "\n\n", ". ", "# ", "## Heading", "def f():", "class C:", "\t", "😀", "é",
    "日本", "!", "x" * 50, "   ", "@d", "a1b2", "\n\n\n", "?\n", "    return 1\n",
]


@pytest.mark.parametrize("seed", range(4))
def test_random_texts_keep_the_structural_guarantees(seed: int) -> None:
    """Odd mixes of whitespace, headings, code and non-ASCII: sizes, coverage, no blanks."""
    for case in range(60):
        rng = random.Random(seed * 1000 + case)
        size = rng.choice([32, 40, 64, 100])
        overlap = rng.choice([0.10, 0.15, 0.20])
        chunker = _chunker(size, overlap)
        text = "".join(rng.choice(FUZZ_PIECES) for _ in range(rng.randint(1, 600)))
        spans = chunker.split_spans(text, rng.choice(list(ContentType)))
        if not text.strip():
            assert spans == []
            continue
        chunks = [text[a:b] for a, b in spans]
        assert all(c and c == c.strip() for c in chunks)
        assert all(_tokens(c) <= size for c in chunks)
        assert not text[: spans[0][0]].strip() and not text[spans[-1][1] :].strip()
        for (a0, b0), (a1, b1) in zip(spans, spans[1:]):
            assert a0 < a1 < b0 < b1 or (b0 <= a1 and not text[b0:a1].strip())
