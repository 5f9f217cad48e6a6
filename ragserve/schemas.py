"""Request, response and inter-stage data types.

The HTTP API validates with these models, and the stages pass the same types between them
through Serve handles (they pickle cheaply), so one definition serves both.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

__all__ = [
    "ContentType",
    "InputKind",
    "FilterValue",
    "Filters",
    "Chunk",
    "ScoredChunk",
    "Citation",
    "Usage",
    "StageTimings",
    "StageBackends",
    "SearchRequest",
    "QueryRequest",
    "SearchResponse",
    "QueryResponse",
    "DocumentIn",
    "IngestRequest",
    "DocumentResult",
    "IngestResponse",
    "DocumentChunks",
    "DeleteResponse",
    "GenerationRequest",
    "GenerationAttempt",
    "GenerationResult",
    "RerankResult",
    "EmbedderInfo",
    "CacheInfo",
    "EmbeddingsRequest",
    "EmbeddingsResponse",
    "validate_filters",
]

MAX_FILTER_KEYS = 16
MAX_FILTER_VALUES = 100
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContentType(str, Enum):
    """Decides the chunk size: the guide's sizes differ for prose, technical text and code."""

    general = "general"
    technical = "technical"
    code = "code"


InputKind = Literal["query", "passage"]
Scalar = Union[str, int, float, bool]
FilterValue = Union[Scalar, list[Scalar]]
Filters = dict[str, FilterValue]

DocId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"),
]
SessionId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
]


def validate_filters(filters: dict[str, Any] | None) -> Filters | None:
    """Check the filter shape: metadata field -> scalar or list of scalars (any-of)."""
    if filters is None:
        return None
    if len(filters) > MAX_FILTER_KEYS:
        raise ValueError(f"at most {MAX_FILTER_KEYS} filter fields are allowed")
    for key, value in filters.items():
        if not _FIELD_NAME.match(key):
            raise ValueError(
                f"filter field {key!r} must be a plain name (letters, digits, '_'; ≤ 64 chars)"
            )
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not 1 <= len(value) <= MAX_FILTER_VALUES:
            raise ValueError(f"filter {key!r} needs 1 to {MAX_FILTER_VALUES} values")
        for v in values:
            if not isinstance(v, (str, int, float, bool)):
                raise ValueError(f"filter {key!r} values must be strings, numbers or booleans")
            if isinstance(v, float) and not isinstance(v, bool) and v != int(v):
                raise ValueError(f"filter {key!r}: match on whole numbers, strings or booleans")
            if isinstance(v, str) and len(v) > 512:
                raise ValueError(f"filter {key!r}: values are limited to 512 characters")
    return filters


# --------------------------------------------------------------------------- inter-stage types


class Chunk(BaseModel):
    """One indexed piece of a document, as stored in the retriever."""

    chunk_id: str = Field(description="Deterministic id: document id + content hash + position.")
    doc_id: str
    chunk_index: int = Field(ge=0)
    text: str
    content_type: ContentType = ContentType.general
    metadata: dict[str, Any] = Field(default_factory=dict)
    doc_hash: str = Field(default="", description="Hash of the whole document's text.")


class ScoredChunk(Chunk):
    score: float = Field(description="Score from the stage that ordered this list.")
    retrieval_score: float | None = Field(default=None, description="Score from the retriever.")


class EmbedderInfo(BaseModel):
    model: str = Field(description="Model name or path as configured.")
    dimension: int
    device: str
    dtype: str
    max_seq_length: int | None = None
    quantize: str = Field(default="none", description="'int8': vectors of the int8 model.")

    @property
    def vectors_id(self) -> str:
        """What the vectors depend on: the model, and its quantisation when there is one."""
        return self.model if self.quantize == "none" else f"{self.model}+{self.quantize}"


class RerankResult(BaseModel):
    chunks: list[ScoredChunk]
    backend: str = Field(description="Which scorer ordered the chunks.")
    degraded: bool = False


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class GenerationRequest(_Strict):
    query: str
    passages: list[ScoredChunk]
    max_tokens: int | None = None
    history: list[tuple[str, str]] = Field(default_factory=list)


class GenerationAttempt(BaseModel):
    """One backend's part in answering: what it did and why it did not answer."""

    backend: str
    outcome: Literal["ok", "failed", "skipped"]
    reason: str | None = Field(default=None, description="e.g. 'timeout', 'http 503', 'circuit open'.")
    tries: int = 0
    elapsed_ms: float = 0.0


class GenerationResult(BaseModel):
    text: str
    usage: Usage
    backend: str
    cited: list[int] = Field(default_factory=list, description="1-based passage numbers cited.")
    passages_used: int = Field(description="How many passages fit in the context window.")
    passages_dropped: int = 0
    finish_reason: str = "stop"
    attempts: list[GenerationAttempt] = Field(
        default_factory=list, description="Every backend tried, in order (fallback chain).")
    route: str | None = Field(default=None, description="'simple' or 'hard' when routing is on.")


# --------------------------------------------------------------------------- HTTP API


class Citation(BaseModel):
    number: int = Field(description="The [n] marker the answer uses for this passage.")
    doc_id: str
    chunk_id: str
    text: str
    score: float
    metadata: dict[str, Any] = Field(default_factory=dict)
    cited: bool = Field(default=False, description="Whether the answer cites this passage.")


class StageTimings(BaseModel):
    embed_ms: float = 0.0
    retrieve_ms: float = 0.0
    rerank_ms: float = 0.0
    generate_ms: float = 0.0
    total_ms: float = 0.0


class StageBackends(BaseModel):
    embedder: str | None = None
    retriever: str | None = None
    reranker: str | None = None
    generator: str | None = None


class SearchRequest(_Strict):
    query: str = Field(description="The question or search text.", min_length=1)
    top_k: int = Field(default=20, ge=1, le=200, description="Candidates from the retriever.")
    rerank_top_n: int = Field(default=5, ge=1, le=200, description="Passages kept after reranking.")
    filters: dict[str, Any] | None = Field(
        default=None,
        description="Metadata filters: field -> value (exact match) or list of values (any of).",
    )
    mode: Literal["dense", "sparse", "hybrid"] | None = Field(
        default=None,
        description="Retrieval: dense embeddings, sparse BM25 terms, or both fused (default: "
        "the service's configured mode).",
    )

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query must not be blank")
        return v

    @field_validator("filters")
    @classmethod
    def _filters_shape(cls, v: dict[str, Any] | None) -> Filters | None:
        return validate_filters(v)


class QueryRequest(SearchRequest):
    stream: bool = Field(default=False, description="Answer as server-sent events.")
    max_tokens: int | None = Field(
        default=None, ge=1, le=4096, description="Answer length limit (capped by config)."
    )
    session_id: SessionId | None = Field(
        default=None,
        description="Conversation id: earlier turns of the same session shape retrieval and "
        "the answer (kept 30 minutes by default).",
    )


class CacheInfo(BaseModel):
    """How the cache tiers served this request."""

    query: Literal["hit", "miss", "deduplicated", "bypass", "off"] = Field(
        default="off",
        description="Query-result cache: 'hit' (served from the cache), 'miss' (computed), "
        "'deduplicated' (an identical concurrent request computed it), 'bypass' (not cacheable "
        "or the cache store is unavailable), 'off' (no query cache configured).",
    )
    embedding_hits: int = Field(default=0, description="Texts whose vectors came from the cache.")
    embedding_misses: int = Field(default=0, description="Texts the embedder had to encode.")
    session_turns: int = Field(default=0, description="Earlier turns of the session taken into account.")


class SearchResponse(BaseModel):
    results: list[Citation]
    timings: StageTimings
    backends: StageBackends
    degraded: bool = False
    warnings: list[str] = Field(default_factory=list)
    cache: CacheInfo | None = None


class QueryResponse(BaseModel):
    answer: str
    citations: list[Citation] = Field(
        description="The passages given to the generator, numbered as the answer cites them."
    )
    usage: Usage
    timings: StageTimings
    backends: StageBackends
    degraded: bool = False
    warnings: list[str] = Field(default_factory=list)
    cache: CacheInfo | None = None
    generation: list[GenerationAttempt] = Field(
        default_factory=list,
        description="The generator backends tried, in order: which answered, which failed and why.",
    )
    route: str | None = Field(default=None, description="'simple' or 'hard' when routing is on.")


class EmbeddingsRequest(_Strict):
    """OpenAI-style ``/v1/embeddings``: the service's embedder for any text."""

    input: str | list[str] = Field(description="One text or up to 2048 texts.")
    input_type: InputKind = Field(
        default="passage", description="'query' or 'passage' (models with prefixes use them).")
    model: str | None = Field(default=None, description="Must name the served model if given.")

    @field_validator("input")
    @classmethod
    def _input_shape(cls, v: str | list[str]) -> str | list[str]:
        items = [v] if isinstance(v, str) else v
        if not 1 <= len(items) <= 2048:
            raise ValueError("input needs 1 to 2048 texts")
        if any(not t.strip() for t in items):
            raise ValueError("input texts must not be blank")
        if any(len(t) > 100_000 for t in items):
            raise ValueError("input texts are limited to 100000 characters")
        return v

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float]


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingsUsage = Field(default_factory=EmbeddingsUsage)
    cache: CacheInfo | None = None


class DocumentIn(_Strict):
    id: DocId = Field(description="Stable document id; re-sending it replaces the document.")
    text: str = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    content_type: ContentType = ContentType.general

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text must not be blank")
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        if len(v) > 64:
            raise ValueError("at most 64 metadata fields")
        for key in v:
            if not _FIELD_NAME.match(key):
                raise ValueError(f"metadata field {key!r} must be a plain name")
        return v


class IngestRequest(_Strict):
    documents: list[DocumentIn] = Field(min_length=1)


class DocumentResult(BaseModel):
    id: str
    status: Literal["created", "updated", "unchanged"]
    chunks: int


class IngestResponse(BaseModel):
    documents: list[DocumentResult]
    chunks_embedded: int
    timings_ms: dict[str, float] = Field(default_factory=dict)
    cache: CacheInfo | None = None


class DocumentChunks(BaseModel):
    id: str
    content_type: ContentType
    metadata: dict[str, Any]
    doc_hash: str
    chunks: list[Chunk]


class DeleteResponse(BaseModel):
    id: str
    deleted_chunks: int
