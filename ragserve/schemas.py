"""Request, response and inter-stage data types.

The HTTP API validates with these models, and the stages pass the same types between them
through Serve handles (they pickle cheaply), so one definition serves both.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints, create_model,
    field_validator,
)

from ragserve.config import ContentType, InputKind, RetrievalMode
from ragserve.stages import STAGES
from ragserve.text import clean_text

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
    "RerankDocument",
    "RerankRequest",
    "RerankedDocument",
    "RerankResponse",
]

MAX_FILTER_KEYS = 16
MAX_FILTER_VALUES = 100
MAX_METADATA_KEYS = 64
MAX_METADATA_DEPTH = 8
MAX_EMBEDDING_INPUTS = 2048
FIELD_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
# At least one character that is neither white space nor a control character: what is left
# after cleaning must not be empty (JSON Schema and Python read this pattern the same way).
NOT_BLANK_PATTERN = r"[^\s\x00-\x1f\x7f]"
_FIELD_NAME = re.compile(FIELD_NAME_PATTERN)
_NOT_BLANK = re.compile(NOT_BLANK_PATTERN)


class _Strict(BaseModel):
    """Request models: unknown fields refused; numbers and booleans are not coerced from
    strings or from each other (``"top_k": "5"``, ``"top_k": true``, ``"stream": 0`` → 422)."""

    model_config = ConfigDict(extra="forbid")


FieldName = Annotated[str, StringConstraints(pattern=FIELD_NAME_PATTERN)]
FilterScalar = Union[StrictBool, StrictInt, Annotated[str, StringConstraints(max_length=512)]]
Scalar = Union[str, int, float, bool]
FilterValue = Union[FilterScalar, Annotated[list[FilterScalar],
                                            Field(min_length=1, max_length=MAX_FILTER_VALUES)]]
Filters = dict[str, FilterValue]
_NAMED_KEYS_ONLY = {"additionalProperties": False, "propertyNames": {"pattern": FIELD_NAME_PATTERN}}
DeclaredFilters = Annotated[
    dict[FieldName, FilterValue],
    Field(max_length=MAX_FILTER_KEYS, json_schema_extra=_NAMED_KEYS_ONLY,
          description=f"Metadata filters: field -> value (exact match) or list of 1 to "
          f"{MAX_FILTER_VALUES} values (any of). At most {MAX_FILTER_KEYS} fields; names are "
          "letters, digits and '_' (≤ 64, not starting with a digit); values are strings "
          "(≤ 512 characters), integers or booleans. `doc_id` and `content_type` filter on the "
          "chunk itself. A field no stored document has matches nothing (the response warns)."),
]
NotBlankStr = Annotated[str, StringConstraints(pattern=NOT_BLANK_PATTERN)]

DocId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"),
]
AclGroup = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")
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
    tenant: str = Field(default="default", description="The tenant the chunk belongs to "
                        "(the key's tenant at ingestion; docs/security.md).")
    acl: list[str] = Field(default_factory=list, description="The document's ACL groups; "
                           "empty: every caller of its tenant may read it.")


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
    long_passages: str = Field(
        default="truncate", description="How a passage longer than the model's input becomes "
        "one vector: 'truncate' (its first window) or 'mean' (the mean of all its windows).")

    @property
    def vectors_id(self) -> str:
        """What the vectors depend on: the model, its quantisation when there is one, and how
        long passages are pooled when they are not truncated."""
        parts = [self.model]
        if self.quantize != "none":
            parts.append(self.quantize)
        if self.long_passages != "truncate":
            parts.append(f"{self.long_passages}-windows")
        return "+".join(parts)


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
    evidence_scores: list[list[float]] | None = Field(
        default=None,
        description="Set inside the generator stage by its semantic evidence scorer: per "
        "passage, the cosine of each unit (``ragserve.generation.evidence.passage_units``) to "
        "the query. None: units are scored lexically only.")


class GenerationAttempt(BaseModel):
    """One backend's part in answering: what it did and why it did not answer."""

    backend: str
    outcome: Literal["ok", "failed", "skipped", "ungrounded"] = Field(
        description="'ungrounded': it answered, but no sentence of its answer was supported "
        "by the passages, so a grounded backend answered instead.")
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
    unsupported_sentences: int = Field(
        default=0, description="Sentences of the model's answer dropped as not supported by "
        "the passages (grounding).")
    first_token_ms: float | None = Field(
        default=None, description="Milliseconds from the generator's call to the first text of "
        "the answer it returns; None when the backend cannot tell (a whole completion from a "
        "server).")
    warnings: list[str] = Field(
        default_factory=list, description="What the generator changed about the request "
        "(e.g. max_tokens reduced to the cap).")


# --------------------------------------------------------------------------- HTTP API


class Citation(BaseModel):
    number: int = Field(description="The [n] marker the answer uses for this passage.")
    doc_id: str
    chunk_id: str
    text: str
    score: float
    metadata: dict[str, Any] = Field(default_factory=dict)
    cited: bool = Field(default=False, description="Whether the answer cites this passage.")


# One field per stage of ``ragserve.stages.STAGES``: ``<verb>_ms`` and the backend that served it.
StageTimings = create_model(
    "StageTimings",
    __doc__="Milliseconds spent in each stage, and in the whole request.",
    **{f"{s.verb}_ms": (float, Field(default=0.0, description=f"In the {s.name}."))
       for s in STAGES},
    first_token_ms=(float, Field(
        default=0.0, description="From the request's start to the answer's first text: the "
        "first streamed token, or for a whole answer when the generator produced it (0: no "
        "answer generated, or the backend could not tell).")),
    total_ms=(float, Field(default=0.0, description="The whole request, at the ingress.")),
)

StageBackends = create_model(
    "StageBackends",
    __doc__="Which backend served each stage (a model, an index, a fallback scorer).",
    **{s.name: (str | None, Field(default=None, description=f"The {s.name}'s backend."))
       for s in STAGES},
)


class SearchRequest(_Strict):
    query: str = Field(
        description="The question or search text: not blank; control characters are removed. "
        "Longer than the service's limit (`limits.max_query_chars`, 4000 by default) → 413.",
        min_length=1, json_schema_extra={"pattern": NOT_BLANK_PATTERN})
    top_k: StrictInt = Field(default=20, ge=1, le=200, description="Candidates from the retriever.")
    rerank_top_n: StrictInt = Field(default=5, ge=1, le=200,
                                    description="Passages kept after reranking.")
    filters: DeclaredFilters | None = Field(default=None)
    mode: RetrievalMode | None = Field(
        default=None,
        description="Retrieval: dense embeddings, sparse BM25 terms, or both fused (default: "
        "the service's configured mode).",
    )

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, v: str) -> str:
        # The declared pattern, checked here for a message people can read.
        if not v.strip():
            raise ValueError("query must not be blank")
        if not _NOT_BLANK.search(v):
            raise ValueError("query is empty after removing control characters")
        return v

    @field_validator("filters", mode="before")
    @classmethod
    def _whole_numbers(cls, v: Any) -> Any:
        def whole(x: Any) -> Any:
            return int(x) if isinstance(x, float) and x.is_integer() else x
        if isinstance(v, dict):
            return {k: [whole(x) for x in val] if isinstance(val, list) else whole(val)
                    for k, val in v.items()}
        return v

    @field_validator("filters")
    @classmethod
    def _filters_shape(cls, v: dict[str, Any] | None) -> Filters | None:
        return validate_filters(v)


class QueryRequest(SearchRequest):
    stream: StrictBool = Field(
        default=False, description="Answer as server-sent events (`text/event-stream`).")
    max_tokens: StrictInt | None = Field(
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
    finish_reason: str | None = Field(
        default=None, description="The generator's: 'stop', or 'length' at the token limit.")


class EmbeddingsRequest(_Strict):
    """OpenAI-style ``/v1/embeddings``: the service's embedder for any text."""

    input: Union[
        Annotated[str, StringConstraints(max_length=100_000, pattern=NOT_BLANK_PATTERN)],
        Annotated[list[Annotated[str, StringConstraints(max_length=100_000,
                                                        pattern=NOT_BLANK_PATTERN)]],
                  Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)],
    ] = Field(description=f"One text or a list of 1 to {MAX_EMBEDDING_INPUTS} texts; none "
              "blank, each at most 100000 characters.")
    input_type: InputKind = Field(
        default="passage", description="'query' or 'passage' (models with prefixes use them).")
    model: str | None = Field(
        default=None, max_length=256,
        description="If given, must be the served embedding model's name (`GET /readyz` → "
        "`stages.embedder.model`); another name → 422.")
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="'base64': each vector as base64 of little-endian "
        "float32 bytes (what the OpenAI SDKs ask for by default).")
    user: str | None = Field(default=None, max_length=256,
                             description="Accepted for OpenAI compatibility; not used.")

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
    embedding: list[float] | str = Field(
        description="The vector, or its base64 float32 bytes with encoding_format 'base64'.")


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
    text: str = Field(
        min_length=1, json_schema_extra={"pattern": NOT_BLANK_PATTERN},
        description="The document. Control characters (other than tab, newline and carriage "
        "return) are replaced by spaces, as in queries; not blank after that.")
    metadata: Annotated[dict[FieldName, Any], Field(max_length=MAX_METADATA_KEYS)] = Field(
        default_factory=dict, json_schema_extra=_NAMED_KEYS_ONLY,
        description=f"Up to {MAX_METADATA_KEYS} fields (names as filter fields), JSON values "
        f"nested at most {MAX_METADATA_DEPTH} levels deep; filterable by field = value.")
    content_type: ContentType = ContentType.general
    acl: list[AclGroup] = Field(
        default_factory=list, max_length=32,
        description="Groups allowed to read the document (any one suffices); empty: every "
        "caller of the ingesting key's tenant. A key with ACL groups reads only documents "
        "without an ACL or sharing a group with it (docs/security.md).")

    @field_validator("text")
    @classmethod
    def _text_clean_not_blank(cls, v: str) -> str:
        v = clean_text(v)
        if not v.strip():
            raise ValueError("text must not be blank (after removing control characters)")
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata_depth(cls, v: dict[str, Any]) -> dict[str, Any]:
        def depth(x: Any, level: int) -> None:
            if level > MAX_METADATA_DEPTH:
                raise ValueError(f"metadata is nested more than {MAX_METADATA_DEPTH} levels deep")
            items = x.values() if isinstance(x, dict) else x if isinstance(x, list) else ()
            for item in items:
                depth(item, level + 1)
        depth(v, 1)
        return v


class IngestRequest(_Strict):
    documents: list[DocumentIn] = Field(
        min_length=1,
        description="Documents with distinct ids (a repeated id → 422); more than "
        "`limits.max_documents_per_request` (256 by default) → 413.")

    @field_validator("documents")
    @classmethod
    def _distinct_ids(cls, v: list[DocumentIn]) -> list[DocumentIn]:
        ids = [d.id for d in v]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"document ids repeat within the request: {dupes[:5]}")
        return v


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


# --------------------------------------------------------------------------- rerank (TEI / Cohere)


class RerankDocument(_Strict):
    """A document given as an object (Cohere's shape): its ``text``, and anything else kept."""

    model_config = ConfigDict(extra="allow")
    text: str = Field(min_length=1, max_length=100_000)


class RerankRequest(_Strict):
    """``POST /v1/rerank`` in the shape TEI, Infinity and Cohere share: score ``documents``
    against ``query`` with the reranker stage and keep the best ``top_n``."""

    query: str = Field(min_length=1, max_length=10_000, description="What to rank against.")
    documents: list[Union[str, RerankDocument]] = Field(
        min_length=1, max_length=1000, description="Texts, or objects with a ``text`` field.")
    top_n: int | None = Field(default=None, ge=1, le=1000,
                              description="How many to return (default: all).")
    return_documents: bool = Field(default=False, description="Echo each document's text.")
    model: str | None = Field(default=None, description="Accepted for compatibility; "
                              "the service's reranker answers whatever it names.")

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query must not be blank")
        return v

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankedDocument(BaseModel):
    index: int = Field(description="Position of the document in the request.")
    relevance_score: float
    document: dict[str, Any] | None = Field(
        default=None, description="``{\"text\": ...}`` when ``return_documents`` is set.")


class RerankResponse(BaseModel):
    object: Literal["rerank"] = "rerank"
    results: list[RerankedDocument] = Field(description="Best first.")
    model: str = Field(description="The scorer that ordered them (the reranker's backend).")
    usage: EmbeddingsUsage = Field(default_factory=EmbeddingsUsage)
    degraded: bool = False
