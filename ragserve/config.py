"""Typed configuration for every stage and for the composed application.

YAML under ``configs/`` reaches these models through Serve's ``import_path`` + ``args`` and
``RagAppArgs.model_validate``. Nothing here reads the environment.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from ragserve.schemas import ContentType

__all__ = [
    "StrictModel",
    "LexicalConfig",
    "RetrievalMode",
    "BatchingConfig",
    "EmbedderConfig",
    "RetrieverConfig",
    "RerankerConfig",
    "LocalGeneratorConfig",
    "OpenAIGeneratorConfig",
    "ExtractiveGeneratorConfig",
    "GeneratorConfig",
    "ChunkSize",
    "ChunkingConfig",
    "LimitsConfig",
    "CacheConfig",
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class BatchingConfig(StrictModel):
    """Knobs of ``@serve.batch``; change at run time through the deployment's ``user_config``."""

    max_batch_size: int = Field(default=32, ge=1, le=1024, description="Items per model call.")
    batch_wait_timeout_s: float = Field(
        default=0.005, ge=0.0, le=1.0, description="How long a batch waits to fill."
    )


class EmbedderConfig(StrictModel):
    model: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="Hub name or local path. Known names resolve to bundled copies when installed.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="'auto' picks CUDA when a GPU is visible."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="'auto' is float16 on CUDA, float32 on CPU."
    )
    max_seq_length: int | None = Field(
        default=None, ge=8, le=8192,
        description="Token limit per input (None: the model's own). Longer inputs are truncated.",
    )
    query_prefix: str = Field(default="", description="Prepended to queries (e5/bge style).")
    passage_prefix: str = Field(default="", description="Prepended to passages.")
    normalize: bool = Field(default=True, description="Unit-length vectors (cosine = dot).")
    torch_threads: int | None = Field(
        default=None, ge=1,
        description="CPU threads the replica's model calls may use in all; default: torch's own.",
    )
    runtime: Literal["torch", "onnx"] = Field(
        default="torch",
        description="What runs the transformer: torch, or ONNX Runtime on CPU (exported from "
        "the loaded weights at start-up; the same vectors, about twice as fast for short texts "
        "on a small CPU). 'onnx' needs device cpu/auto and float32.",
    )
    quantize: Literal["none", "int8"] = Field(
        default="none",
        description="'int8' (runtime 'onnx' only): the transformer's weights in int8 per output "
        "channel, activations quantised per call (ONNX Runtime's dynamic quantisation). About 2x "
        "faster on CPU; vectors move to a cosine of ~0.99 against float32, so build and query an "
        "index with the same setting (its SciFact quality: BENCHMARKS.md).",
    )
    workers: int | None = Field(
        default=None, ge=1, le=64,
        description="Model calls a replica runs at once, each on torch_threads // workers "
        "intra-op threads. None: one per torch thread on CPU (two one-thread calls outrun one "
        "two-thread call by ~25% on 2 cores, BENCHMARKS.md), 1 on CUDA.",
    )
    max_input_chars: int = Field(
        default=20_000, ge=100, description="Characters kept per input before tokenising."
    )
    encode_batch_size: int | None = Field(
        default=None, ge=1, le=4096,
        description="Texts per forward pass: a Serve batch is sorted by length and split into "
        "passes of this size, so short texts are not padded to the longest. None: 16 on CPU "
        "(fastest on 2 cores, BENCHMARKS.md), 128 on CUDA.",
    )
    batching: BatchingConfig = Field(default_factory=BatchingConfig)

    @model_validator(mode="after")
    def _onnx_runs_float32_on_cpu(self) -> EmbedderConfig:
        if self.runtime == "onnx" and (self.device == "cuda" or self.dtype not in ("auto", "float32")):
            raise ValueError("runtime 'onnx' runs float32 on the CPU: set device cpu/auto and "
                             "dtype auto/float32, or use runtime 'torch' on a GPU")
        return self

    @model_validator(mode="after")
    def _int8_runs_on_onnx(self) -> EmbedderConfig:
        if self.quantize != "none" and self.runtime != "onnx":
            raise ValueError(f"quantize {self.quantize!r} needs runtime 'onnx'")
        return self

    @model_validator(mode="after")
    def _workers_fit_threads(self) -> EmbedderConfig:
        if self.workers and self.torch_threads and self.workers > self.torch_threads:
            raise ValueError(f"workers ({self.workers}) must not exceed torch_threads "
                             f"({self.torch_threads}): each worker needs at least one thread")
        return self


class LexicalConfig(StrictModel):
    """BM25 term weights of the sparse (lexical) vectors; Qdrant supplies the IDF."""

    k1: float = Field(default=0.9, ge=0, description="BM25 term-frequency saturation.")
    b: float = Field(default=0.4, ge=0, le=1, description="BM25 length normalisation.")
    avg_len: float = Field(default=200.0, gt=0, description="Typical chunk length in terms.")


RetrievalMode = Literal["dense", "sparse", "hybrid"]


class RetrieverConfig(StrictModel):
    collection: str = Field(default="ragserve", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    path: str | None = Field(
        default=".ragserve/qdrant",
        description="Qdrant embedded local mode: folder on disk. Ignored when url is set.",
    )
    url: str | None = Field(default=None, description="Qdrant server URL, e.g. http://qdrant:6333.")
    api_key: SecretStr | None = Field(default=None, description="Qdrant server API key.")
    timeout_s: float = Field(default=10.0, gt=0, description="Per-call timeout to Qdrant.")
    filterable_fields: list[str] = Field(
        default_factory=lambda: ["source", "content_type", "tags"],
        description="Metadata fields that get a payload index (keyword).",
    )
    hnsw_ef: int | None = Field(default=None, ge=4, description="Search-time ef (server mode).")
    default_mode: RetrievalMode = Field(
        default="hybrid",
        description="dense (embeddings), sparse (BM25 terms) or hybrid (both, fused by Qdrant).",
    )
    fusion: Literal["rrf", "dbsf"] = Field(
        default="dbsf",
        description="Hybrid fusion: 'dbsf' (distribution-based score fusion; best nDCG@10 on "
        "SciFact train) or 'rrf' (reciprocal rank).",
    )
    prefetch_factor: int = Field(
        default=2, ge=1, le=10, description="Hybrid: each side prefetches factor × top_k."
    )
    lexical: LexicalConfig = Field(default_factory=LexicalConfig)
    local_sparse_index: bool = Field(
        default=True,
        description="Local mode: answer the lexical side of sparse/hybrid queries from an "
        "in-memory inverted index mirroring the collection (same scores; Qdrant's local mode "
        "scans every point in Python). Ignored with a server.",
    )

    @property
    def local(self) -> bool:
        return self.url is None


class RerankerConfig(StrictModel):
    model: str | None = Field(
        default="cross-encoder/ms-marco-MiniLM-L6-v2",
        description="Cross-encoder name or path. None: use the fallback scorer only.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_length: int = Field(default=512, ge=16, le=4096, description="Tokens per (query, passage).")
    fallback: Literal["lexical_fusion", "retrieval"] = Field(
        default="retrieval",
        description=(
            "Scorer used when the cross-encoder cannot be loaded. 'retrieval' keeps the "
            "retriever's order: over hybrid retrieval (the default) nothing weight-free measured "
            "better on SciFact train. 'lexical_fusion' fuses BM25 over the candidates with the "
            "retriever's score: it helps dense-only retrieval (+0.05 nDCG@10 on SciFact train)."
        ),
    )
    fusion_weight: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="lexical_fusion: weight of the retriever score (rest: lexical BM25 score).",
    )
    batching: BatchingConfig = Field(
        default_factory=lambda: BatchingConfig(max_batch_size=8, batch_wait_timeout_s=0.005),
        description="Batching counts requests (each a query with its candidates).",
    )


class LocalGeneratorConfig(StrictModel):
    backend: Literal["local"] = "local"
    model: str = Field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="Hub name, local folder, or .gguf file. Known names resolve to bundled copies.",
    )
    gguf_file: str | None = Field(default=None, description="GGUF file name inside `model`.")
    cache_dir: str = Field(
        default=".ragserve/models", description="Converted copies of GGUF models live here."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    context_window: int = Field(default=2048, ge=256, description="Prompt + answer tokens.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 = greedy.")
    repetition_penalty: float = Field(default=1.1, ge=1.0, le=2.0)
    torch_threads: int | None = Field(default=None, ge=1)
    timeout_s: float = Field(default=60.0, gt=0, description="Per call (CPU answers take seconds).")


class OpenAIGeneratorConfig(StrictModel):
    backend: Literal["openai"] = "openai"
    base_url: str = Field(description="Server root, e.g. http://vllm:8000/v1.")
    model: str = Field(description="Model name the server knows.")
    api_key: SecretStr | None = None
    context_window: int = Field(default=8192, ge=256)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    timeout_s: float = Field(default=30.0, gt=0)


class ExtractiveGeneratorConfig(StrictModel):
    backend: Literal["extractive"] = "extractive"
    context_window: int = Field(default=4096, ge=256)
    max_sentences: int = Field(default=3, ge=1, le=20)
    timeout_s: float = Field(default=5.0, gt=0, description="Per call.")


GeneratorBackendConfig = Annotated[
    Union[LocalGeneratorConfig, OpenAIGeneratorConfig, ExtractiveGeneratorConfig],
    Field(discriminator="backend"),
]


class RetryConfig(StrictModel):
    """Retries of transient failures (timeouts, connection errors, 5xx, 429) per backend."""

    max_attempts: int = Field(default=3, ge=1, le=3, description="Tries per backend, first included.")
    base_delay_s: float = Field(default=0.2, ge=0, description="Backoff: base × 2^(try-1), jittered.")
    max_delay_s: float = Field(default=2.0, ge=0)
    max_retry_after_s: float = Field(
        default=5.0, ge=0,
        description="A 429/503 Retry-After longer than this falls through to the next backend.",
    )


class GeneratorBreakerConfig(StrictModel):
    """Per backend: open after ``failure_threshold`` consecutive failed calls; after
    ``reset_timeout_s`` one trial call (half-open) decides between closed and open."""

    failure_threshold: int = Field(default=3, ge=1)
    reset_timeout_s: float = Field(default=30.0, gt=0)


class RoutingConfig(StrictModel):
    """Cheaper model for simple queries. A query is *simple* when it is short, has no words
    that ask for reasoning, and the session has no history; anything else is *hard* and goes
    to the primary chain. The simple backend falls back to the primary chain too."""

    simple_backend: GeneratorBackendConfig
    max_query_tokens: int = Field(default=16, ge=1, description="Longer queries are hard.")
    hard_terms: list[str] = Field(
        default_factory=lambda: [
            "why", "how does", "how do", "explain", "compare", "comparison", "difference",
            "versus", "vs", "trade-off", "tradeoff", "pros and cons", "evaluate", "analyse",
            "analyze", "step by step", "design", "recommend", "should i",
        ],
        description="Phrases that make a query hard (matched on word boundaries, any case).",
    )


class GeneratorConfig(StrictModel):
    """Which backend answers, plus limits that hold whatever the backend."""

    backend: GeneratorBackendConfig = Field(default_factory=LocalGeneratorConfig)
    fallbacks: list[GeneratorBackendConfig] = Field(
        default_factory=list,
        description="Tried in order when the backend (and each earlier fallback) fails.",
    )
    routing: RoutingConfig | None = Field(
        default=None, description="Send simple queries to a cheaper backend first.")
    retry: RetryConfig = Field(default_factory=RetryConfig)
    breaker: GeneratorBreakerConfig = Field(default_factory=GeneratorBreakerConfig)
    deadline_s: float = Field(
        default=50.0, gt=0,
        description="Budget of one generation across every backend, retry and wait.",
    )


    default_max_tokens: int = Field(default=256, ge=1)
    max_tokens_cap: int = Field(default=1024, ge=1, description="No request gets more than this.")
    token_encoding: str = Field(
        default="cl100k_base", description="tiktoken encoding for budgets where no tokenizer."
    )
    system_prompt: str = Field(
        default=(
            "You answer questions using only the numbered passages. Cite passages like [1]. "
            "If the passages do not contain the answer, say you do not know."
        )
    )

    @model_validator(mode="after")
    def _cap(self) -> "GeneratorConfig":
        if self.default_max_tokens > self.max_tokens_cap:
            raise ValueError("default_max_tokens must not exceed max_tokens_cap")
        return self


class ChunkSize(StrictModel):
    tokens: int = Field(ge=32, le=8192, description="Target chunk length in tokens.")
    overlap: float = Field(ge=0.10, le=0.20, description="Fraction shared with the next chunk.")


class ChunkingConfig(StrictModel):
    """Token-aware sizes by content type (the guide: technical 800–1200, code 500–800,
    general 1000–1500, 10–20 % overlap)."""

    encoding: str = Field(default="cl100k_base", description="tiktoken encoding.")
    sizes: dict[ContentType, ChunkSize] = Field(
        default_factory=lambda: {
            ContentType.technical: ChunkSize(tokens=1000, overlap=0.15),
            ContentType.code: ChunkSize(tokens=650, overlap=0.15),
            ContentType.general: ChunkSize(tokens=1200, overlap=0.15),
        }
    )
    embed_batch_size: int = Field(default=64, ge=1, le=1024, description="Chunks per embed call.")

    @model_validator(mode="after")
    def _all_types(self) -> "ChunkingConfig":
        missing = set(ContentType) - set(self.sizes)
        if missing:
            raise ValueError(f"chunk sizes missing for: {sorted(m.value for m in missing)}")
        return self


class LimitsConfig(StrictModel):
    """Request bounds enforced by the ingress (violations are 4xx, never 500)."""

    max_query_chars: int = Field(default=4000, ge=1)
    max_documents_per_request: int = Field(default=256, ge=1)
    max_document_chars: int = Field(default=2_000_000, ge=1)
    max_request_chars: int = Field(default=20_000_000, ge=1)


class EmbeddingCacheConfig(StrictModel):
    enabled: bool = True
    ttl_s: float = Field(default=7 * 24 * 3600, gt=0, description="Vector lifetime (7 days).")


class QueryCacheConfig(StrictModel):
    enabled: bool = True
    ttl_s: float = Field(default=3600, gt=0, description="Answer lifetime (1 hour).")


class SessionCacheConfig(StrictModel):
    enabled: bool = True
    ttl_s: float = Field(default=1800, gt=0, description="Idle time before a session ends (30 min).")
    max_sessions: int = Field(default=10_000, ge=1, description="In-memory bound (LRU).")
    max_turns: int = Field(default=8, ge=1, le=100, description="Turns kept per session.")
    retrieval_turns: int = Field(
        default=1, ge=0, le=10,
        description="Earlier user questions prepended to a follow-up's retrieval query.",
    )


class DedupConfig(StrictModel):
    """Identical concurrent requests compute once: single-flight in a replica, plus a Redis
    lock across replicas (the others wait for the first one's cached result)."""

    enabled: bool = True
    lock_ttl_s: float = Field(default=30.0, gt=0, description="Longest a lock is held.")
    poll_interval_s: float = Field(default=0.05, gt=0, description="Waiters re-read this often.")


class CacheConfig(StrictModel):
    """The three cache tiers and de-duplication. Without ``redis_url`` an in-process store
    serves them (the embedded default); with it, every ingress replica shares Redis."""

    redis_url: SecretStr | None = Field(
        default=None, description="redis://[:password@]host:port/db; None: in-process store."
    )
    key_prefix: str = Field(default="ragserve", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    timeout_s: float = Field(default=0.25, gt=0, description="Per store operation.")
    failure_threshold: int = Field(
        default=3, ge=1, description="Consecutive store failures before the cache is bypassed."
    )
    retry_after_s: float = Field(default=5.0, gt=0, description="Bypass time before a trial call.")
    memory_max_entries: int = Field(
        default=50_000, ge=1, description="In-process store bound (~80 MB of 384-d vectors).")
    embeddings: EmbeddingCacheConfig = Field(default_factory=EmbeddingCacheConfig)
    queries: QueryCacheConfig = Field(default_factory=QueryCacheConfig)
    sessions: SessionCacheConfig = Field(default_factory=SessionCacheConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)


def dump_public(model: BaseModel) -> dict[str, Any]:
    """A dict for logs and health output: secrets stay masked."""
    return model.model_dump(mode="json")
