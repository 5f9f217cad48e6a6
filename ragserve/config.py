"""Typed configuration for every stage and for the composed application.

YAML under ``configs/`` reaches these models through Serve's ``import_path`` + ``args`` and
``RagAppArgs.model_validate``. Nothing here reads the environment.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from ragserve.security.config import SecretRef, SecurityConfig
from ragserve.security.pii import PiiConfig

__all__ = [
    "StrictModel",
    "ContentType",
    "InputKind",
    "RetrievalMode",
    "BreakerConfig",
    "LexicalConfig",
    "BatchingConfig",
    "EmbedderConfig",
    "EdgeIndexConfig",
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
    "IngressConfig",
    "TokenPrice",
    "MetricsConfig",
    "TracingConfig",
    "LoggingConfig",
    "SentryConfig",
    "ObservabilityConfig",
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ContentType(str, Enum):
    """Decides the chunk size: the guide's sizes differ for prose, technical text and code."""

    general = "general"
    technical = "technical"
    code = "code"


InputKind = Literal["query", "passage"]
RetrievalMode = Literal["dense", "sparse", "hybrid"]


class BreakerConfig(StrictModel):
    """A circuit breaker around one dependency: open after ``failure_threshold`` consecutive
    failed calls; after ``reset_timeout_s`` one trial call (half-open) decides between closed
    and open. The generator backends and the cache store each have one."""

    failure_threshold: int = Field(default=3, ge=1, description="Consecutive failures that open it.")
    reset_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds open before one trial call is let through.")


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
    long_passages: Literal["truncate", "mean"] = Field(
        default="mean",
        description="A passage longer than the model's input (max_seq_length word pieces; "
        "MiniLM: 256, an ingest chunk: ~1,000): 'mean' embeds all of it, window by window, "
        "and keeps the normalised mean of the windows' vectors; 'truncate' embeds its first "
        "window only. Queries are never cut. 'mean' costs one model pass per window at "
        "ingestion (docs/benchmarks/retrieval-quality.md); an index is built and queried with "
        "one setting (the embedding cache keys them apart).",
    )
    window_overlap: int = Field(
        default=32, ge=0, le=512,
        description="Word pieces consecutive windows of a long passage share (about an eighth "
        "of MiniLM's 256).",
    )
    encode_batch_size: int | None = Field(
        default=None, ge=1, le=4096,
        description="Texts per forward pass: a Serve batch is sorted by length and split into "
        "passes of this size, so short texts are not padded to the longest. None: 16 on CPU "
        "(fastest on 2 cores, BENCHMARKS.md), 128 on CUDA.",
    )
    batching: BatchingConfig = Field(
        default_factory=BatchingConfig, description="Dynamic batching across requests.")

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



class EdgeIndexConfig(StrictModel):
    """The ``edge`` retriever backend: Qdrant's own engine in process (qdrant-edge-py), with an
    HNSW index over the dense vectors and an inverted index over the sparse ones."""

    path: str = Field(
        default=".ragserve/edge",
        description="Folder holding one shard folder per collection (locked by the one "
        "process that opens it).")
    hnsw_m: int = Field(default=16, ge=4, le=128, description="HNSW edges per node.")
    hnsw_ef_construct: int = Field(
        default=100, ge=4, description="HNSW candidates while building (quality vs build time).")
    hnsw_ef: int = Field(
        default=128, ge=4,
        description="HNSW candidates while searching (recall vs latency; at least the top_k).")
    quantization: Literal["none", "int8"] = Field(
        default="none",
        description="'int8': scalar-quantized copy of the dense vectors kept in RAM, searched "
        "first and rescored with the originals (a quarter of the memory per search).")
    oversampling: float = Field(
        default=2.0, ge=1.0, le=10.0,
        description="int8 quantization: candidates fetched per result before rescoring.")
    full_scan_threshold_kb: int = Field(
        default=10000, ge=0,
        description="Segments (and filtered subsets) smaller than this many KB of vectors are "
        "searched exactly instead of through HNSW.")
    search_threads: int | None = Field(
        default=None, ge=1,
        description="Threads of the shard's search pool; None: one per CPU.")
    optimize_after_write: bool = Field(
        default=True,
        description="Run the shard's optimizers (segment merging, HNSW building) after each "
        "write, in a worker thread. Off: call the retriever's optimize() yourself (bulk "
        "loads); until then new points are searched exactly.")


class RetrieverConfig(StrictModel):
    backend: Literal["qdrant", "edge"] = Field(
        default="qdrant",
        description="'qdrant': qdrant-client, embedded local mode (path) or a server (url). "
        "'edge': Qdrant's engine in process (qdrant-edge-py; settings under `edge`).")
    edge: EdgeIndexConfig = Field(
        default_factory=EdgeIndexConfig, description="The edge backend's settings.")
    collection: str = Field(default="ragserve", pattern=r"^[A-Za-z0-9_-]{1,64}$",
                            description="Qdrant collection holding the chunks.")
    path: str | None = Field(
        default=".ragserve/qdrant",
        description="Qdrant embedded local mode: folder on disk. Ignored when url is set.",
    )
    url: str | None = Field(default=None, description="Qdrant server URL, e.g. http://qdrant:6333.")
    api_key: SecretRef | None = Field(
        default=None, description="Qdrant server API key: where it is read from ({env}, "
        "{file} e.g. a mounted Secret, or {value} for tests), resolved when the client opens.")
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
    prefetch_min: int = Field(
        default=100, ge=1, le=1000,
        description="Hybrid: each side prefetches at least this many candidates, however small "
        "top_k is. Fusion (DBSF normalises each side by its candidates' score spread) needs "
        "enough of them: at top_k 20, 100 rather than 40 gave +0.005 nDCG@10 on SciFact "
        "train (docs/benchmarks/retrieval-quality.md).",
    )
    lexical: LexicalConfig = Field(
        default_factory=LexicalConfig, description="BM25 weights of the sparse vectors.")
    local_sparse_index: bool = Field(
        default=True,
        description="Local mode: answer the lexical side of sparse/hybrid queries from an "
        "in-memory inverted index mirroring the collection (same scores; Qdrant's local mode "
        "scans every point in Python). Ignored with a server.",
    )

    @property
    def local(self) -> bool:
        return self.url is None

    def prefetch_depth(self, top_k: int) -> int:
        """Hybrid: candidates each side hands to fusion for a ``top_k`` query."""
        return max(top_k * self.prefetch_factor, self.prefetch_min)


class RerankerConfig(StrictModel):
    model: str | None = Field(
        default="cross-encoder/ms-marco-MiniLM-L6-v2",
        description="Cross-encoder name or path. None: use the fallback scorer only.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="'auto' picks CUDA when a GPU is visible.")
    max_length: int = Field(default=512, ge=16, le=4096, description="Tokens per (query, passage).")
    fallback: Literal["best_part", "lexical_fusion", "retrieval"] = Field(
        default="retrieval",
        description=(
            "Scorer used when the cross-encoder cannot be loaded. 'retrieval' keeps the "
            "retriever's order: over hybrid retrieval (the default) nothing weight-free measured "
            "better on SciFact train. 'lexical_fusion' fuses BM25 over the candidates with the "
            "retriever's score: it helps dense-only retrieval (+0.05 nDCG@10 on SciFact train). "
            "'best_part' judges each chunk by its best sentence (the question's words it shares) "
            "and fuses that order with the retriever's: over long Markdown chunks (the project's "
            "docs) the passage holding the answer reaches the top 5 for 74 of 89 questions "
            "instead of 66, but SciFact loses 0.004 (train) / 0.012 (test) nDCG@10."
        ),
    )
    fusion_weight: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="lexical_fusion: weight of the retriever score (rest: lexical BM25 score).",
    )
    best_part_weight: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="best_part: weight of the best-part order in the reciprocal-rank fusion "
        "(the retriever's order weighs 1).",
    )
    batching: BatchingConfig = Field(
        default_factory=lambda: BatchingConfig(max_batch_size=8, batch_wait_timeout_s=0.005),
        description="Batching counts requests (each a query with its candidates).",
    )


class LocalGeneratorConfig(StrictModel):
    backend: Literal["local"] = Field(default="local", description="A model run in process.")
    model: str = Field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="Hub name, local folder, or .gguf file. Known names resolve to bundled copies.",
    )
    gguf_file: str | None = Field(default=None, description="GGUF file name inside `model`.")
    cache_dir: str = Field(
        default=".ragserve/models", description="Converted copies of GGUF models live here."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="'auto' picks CUDA when a GPU is visible.")
    context_window: int = Field(default=2048, ge=256, description="Prompt + answer tokens.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 = greedy.")
    repetition_penalty: float = Field(
        default=1.1, ge=1.0, le=2.0, description="Penalty on repeated tokens (1 = none).")
    torch_threads: int | None = Field(
        default=None, ge=1,
        description="CPU threads for the model (torch's, CTranslate2's intra_threads or "
        "llama.cpp's); default: the engine's own.")
    timeout_s: float = Field(default=60.0, gt=0, description="Per call (CPU answers take seconds).")
    engine: Literal["ctranslate2", "transformers", "llamacpp"] = Field(
        default="ctranslate2",
        description="What runs the model. 'ctranslate2' (default: on 2 CPU cores 2.5-3.5x the "
        "tokens/s of transformers, first token sooner, a third less memory): converted once "
        "more, next to the GGUF's converted copy, into a CTranslate2 model quantized per "
        "`compute_type`; needs a writable `cache_dir`. 'transformers': the converted copy in "
        "torch (float32 on CPU, float16 on CUDA). 'llamacpp': a GGUF checkpoint on llama.cpp's "
        "quantised kernels, requantized once per `gguf_weights` (needs llama-cpp-python, which "
        "compiles llama.cpp: the `llamacpp` extra). See docs/benchmarks/generation-cpu.md.",
    )
    gguf_weights: Literal["Q4_0", "Q8_0", "F16", "file"] = Field(
        default="Q8_0",
        description="Engine 'llamacpp': the weight type it runs, requantized once from the GGUF "
        "into `cache_dir` (under a second). llama.cpp reads prompts with fast matrix kernels "
        "for Q4_0, Q8_0 and F16 but not for the bundled file's Q4_1 (half the speed). 'Q8_0' "
        "keeps the file's values almost exactly; 'Q4_0' is faster and rounds them again; "
        "'file': the weights as the file has them, no copy.",
    )
    compute_type: Literal[
        "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "float16",
        "bfloat16", "float32",
    ] = Field(
        default="auto",
        description="CTranslate2 weights and arithmetic (engine 'ctranslate2' only). 'auto': "
        "int8 on CPU, int8_float16 on CUDA.",
    )


class OpenAIGeneratorConfig(StrictModel):
    backend: Literal["openai"] = Field(
        default="openai", description="An OpenAI-compatible server (vLLM, TGI, llama.cpp, ...).")
    base_url: str = Field(description="Server root, e.g. http://vllm:8000/v1.")
    model: str = Field(description="Model name the server knows.")
    api_key: SecretRef | None = Field(
        default=None, description="Sent as a bearer token: where it is read from ({env}, "
        "{file} e.g. a mounted Secret, or {value} for tests), resolved when the client opens.")
    context_window: int = Field(default=8192, ge=256, description="Prompt + answer tokens.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 = greedy.")
    timeout_s: float = Field(default=30.0, gt=0, description="Per HTTP call.")


class ExtractiveGeneratorConfig(StrictModel):
    backend: Literal["extractive"] = Field(
        default="extractive", description="No model: the passages' best-matching sentences, cited.")
    context_window: int = Field(default=4096, ge=256, description="Passage tokens considered.")
    max_sentences: int = Field(default=3, ge=1, le=20, description="Sentences in an answer.")
    min_query_coverage: float = Field(
        default=0.34, ge=0.0, le=1.0,
        description="Share of the question's content words that at least one passage "
        "sentence must hold for the passages to count as relevant; below it the answer is "
        "'I could not find any passages relevant to this question.'")
    min_similarity: float = Field(
        default=0.5, ge=-1.0, le=1.0,
        description="With semantic evidence scores (generator.config.evidence.model): a unit "
        "at this cosine to the question or more also makes the passages relevant (a "
        "paraphrase shares no words). Over the project's docs (bench_answers.py), answerable "
        "questions' best unit had a median cosine of 0.53; 2 of 14 unanswerable ones "
        "reached 0.5.")
    rank_discount: float = Field(
        default=0.25, ge=0.0,
        description="A unit's evidence score is divided by 1 + rank_discount × (its passage's "
        "place − 1): the retriever's order counts too, so a unit of the fifth passage needs "
        "twice the score of one in the first to be quoted first. 0: passage order only breaks "
        "ties. Over the project's docs (bench_answers.py, all 103 questions; not a held-out "
        "set) 0.1 / 0.25 / 0.5 each cited and stated the evidence more often than 0.")
    timeout_s: float = Field(default=5.0, gt=0, description="Per call.")


GeneratorBackendConfig = Annotated[
    Union[LocalGeneratorConfig, OpenAIGeneratorConfig, ExtractiveGeneratorConfig],
    Field(discriminator="backend"),
]


class RetryConfig(StrictModel):
    """Retries of transient failures (timeouts, connection errors, 5xx, 429) per backend."""

    max_attempts: int = Field(default=3, ge=1, le=3, description="Tries per backend, first included.")
    base_delay_s: float = Field(default=0.2, ge=0, description="Backoff: base × 2^(try-1), jittered.")
    max_delay_s: float = Field(default=2.0, ge=0, description="Longest backoff between tries.")
    max_retry_after_s: float = Field(
        default=5.0, ge=0,
        description="A 429/503 Retry-After longer than this falls through to the next backend.",
    )
    retry_timeouts: bool = Field(
        default=False,
        description="Retry a try that timed out. Off: a server that accepts connections and "
        "never answers hangs again, and each try costs a whole timeout, so the next backend "
        "answers instead.",
    )


class RoutingConfig(StrictModel):
    """Cheaper model for simple queries. A query is *simple* when it is short, has no words
    that ask for reasoning, and the session has no history; anything else is *hard* and goes
    to the primary chain. The simple backend falls back to the primary chain too."""

    simple_backend: GeneratorBackendConfig = Field(
        description="The cheaper backend tried first for simple queries.")
    max_query_tokens: int = Field(default=16, ge=1, description="Longer queries are hard.")
    hard_terms: list[str] = Field(
        default_factory=lambda: [
            "why", "how does", "how do", "explain", "compare", "comparison", "difference",
            "versus", "vs", "trade-off", "tradeoff", "pros and cons", "evaluate", "analyse",
            "analyze", "step by step", "design", "recommend", "should i",
        ],
        description="Phrases that make a query hard (matched on word boundaries, any case).",
    )


class EvidenceConfig(StrictModel):
    """How the generator stage reads passages unit by unit (``ragserve.generation.evidence``):
    what of each passage a model is shown (``prompt.select_evidence``) and which sentences an
    extractive answer quotes.

    A small local model answers better, and starts sooner, from the few sentences that bear on
    the question than from whole ingest chunks; the response still cites the whole passage."""

    sentences_per_passage: int | None = Field(
        default=None, ge=1, le=50,
        description="Show a model only this many units (sentences, table rows, code lines) of "
        "each passage: the best scored, in their order, gaps marked with an ellipsis. None: "
        "whole passages.")
    model: EmbedderConfig | None = Field(
        default=None,
        description="A sentence-embedding model that scores each unit by its cosine to the "
        "question, added to the lexical score (finds paraphrases). Loaded in the generator's "
        "replica with the embedder's code; None: lexical scores only.")
    lexical_weight: float = Field(
        default=0.5, ge=0.0, le=10.0,
        description="With a model: weight of the lexical score (scaled to the request's best, "
        "1.0) added to the cosine.")
    cache_size: int = Field(
        default=50_000, ge=0,
        description="Unit vectors kept in memory (by text hash; least recently used out).")


class GroundingConfig(StrictModel):
    """How a model's answer is held to its passages (``ragserve.generation.grounding``)."""

    enabled: bool = Field(
        default=True,
        description="Check every model answer sentence by sentence against its passages: "
        "unsupported sentences are dropped, and an answer with none left is replaced by the "
        "extractive answer (cited, flagged degraded). The extractive backend is never checked "
        "(its sentences are the passages' own).")
    min_support: float = Field(
        default=0.6, ge=0.0, le=1.0,
        description="Share of a sentence's content words (stemmed, stopwords out) that the "
        "passage it rests on must hold; every number it states must be there too.")
    min_terms: int = Field(
        default=2, ge=0,
        description="Sentences with fewer content words and no number carry no claim of their "
        "own (\"Yes.\"): kept when they cite a passage, dropped otherwise.")
    attribute_uncited: bool = Field(
        default=True,
        description="A supported sentence that cites nothing (or the wrong passage) gets the "
        "marker of the passage that holds it; off: such sentences are dropped.")
    stop_after_unsupported: int | None = Field(
        default=2, ge=1,
        description="A model answer whose first this-many claims are all unsupported is "
        "stopped there (its decoding cancelled) and replaced at once, as an answer with no "
        "supported sentence is: its later sentences could only be kept if they were "
        "supported after two that were not. None: always read the whole answer.")


class GeneratorConfig(StrictModel):
    """Which backend answers, plus limits that hold whatever the backend."""

    backend: GeneratorBackendConfig = Field(
        default_factory=LocalGeneratorConfig,
        description="The primary backend: local, openai or extractive (by its `backend` key).")
    fallbacks: list[GeneratorBackendConfig] = Field(
        default_factory=list,
        description="Tried in order when the backend (and each earlier fallback) fails.",
    )
    routing: RoutingConfig | None = Field(
        default=None, description="Send simple queries to a cheaper backend first.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retries per backend.")
    breaker: BreakerConfig = Field(
        default_factory=BreakerConfig, description="One breaker per backend, with these settings.")
    deadline_s: float = Field(
        default=50.0, gt=0,
        description="Budget of one generation across every backend, retry and wait.",
    )
    first_token_timeout_s: float | None = Field(
        default=None, gt=0,
        description="When set, backends are read as streams and one that sends no first "
        "token within this many seconds counts as timed out: a server that accepts calls "
        "and never answers is given up in seconds, whatever the answer's length (its "
        "`timeout_s` still bounds the whole answer). None: only `timeout_s`.",
    )
    default_max_tokens: int = Field(
        default=256, ge=1, description="Answer length when a request names none.")
    max_tokens_cap: int = Field(default=1024, ge=1, description="No request gets more than this.")
    token_encoding: str = Field(
        default="cl100k_base", description="tiktoken encoding for budgets where no tokenizer."
    )
    evidence: EvidenceConfig = Field(
        default_factory=EvidenceConfig,
        description="Sentence-level selection inside passages before they go to a model.")
    grounding: GroundingConfig = Field(
        default_factory=GroundingConfig,
        description="Hold model answers to their passages (sentence-level support check).")
    system_prompt: str = Field(
        description="Instructions given to every model backend before the passages.",
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
        description="Chunk length and overlap per content type.",
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

    max_query_chars: int = Field(default=4000, ge=1, description="Characters in one query.")
    max_documents_per_request: int = Field(
        default=256, ge=1, description="Documents in one ingest request.")
    max_document_chars: int = Field(default=2_000_000, ge=1, description="Characters per document.")
    max_request_chars: int = Field(
        default=20_000_000, ge=1,
        description="Bytes in one request body, chunked bodies included (413 beyond).")


class EmbeddingCacheConfig(StrictModel):
    enabled: bool = Field(default=True, description="Cache vectors by model and text.")
    ttl_s: float = Field(default=7 * 24 * 3600, gt=0, description="Vector lifetime (7 days).")


class QueryCacheConfig(StrictModel):
    enabled: bool = Field(default=True, description="Cache complete search results and answers.")
    ttl_s: float = Field(default=3600, gt=0, description="Answer lifetime (1 hour).")


class SessionCacheConfig(StrictModel):
    enabled: bool = Field(default=True, description="Keep conversations by session id.")
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

    enabled: bool = Field(default=True, description="Compute identical concurrent requests once.")
    lock_ttl_s: float = Field(default=30.0, gt=0, description="Longest a lock is held.")
    poll_interval_s: float = Field(default=0.05, gt=0, description="Waiters re-read this often.")


class CacheConfig(StrictModel):
    """The three cache tiers and de-duplication. Without ``redis_url`` an in-process store
    serves them (the embedded default); with it, every ingress replica shares Redis."""

    redis_url: SecretStr | None = Field(
        default=None, description="redis://[:password@]host:port/db, or rediss:// for TLS "
        "(?ssl_ca_certs=/path/ca.pem for a private CA); None: in-process store."
    )
    redis_password: SecretRef | None = Field(
        default=None, description="The Redis password, read at start-up ({env: NAME} or "
        "{file: path}, e.g. a Kubernetes Secret) and put into redis_url (which then holds none).")
    key_prefix: str = Field(default="ragserve", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                            description="Prefix of every key this service writes.")
    timeout_s: float = Field(default=0.25, gt=0, description="Per store operation.")
    breaker: BreakerConfig = Field(
        default_factory=lambda: BreakerConfig(failure_threshold=3, reset_timeout_s=5.0),
        description="Consecutive store failures bypass the cache until a trial call succeeds.")
    memory_max_entries: int = Field(
        default=50_000, ge=1, description="In-process store bound (~80 MB of 384-d vectors).")
    embeddings: EmbeddingCacheConfig = Field(
        default_factory=EmbeddingCacheConfig, description="Tier 1: vectors (7 days).")
    queries: QueryCacheConfig = Field(
        default_factory=QueryCacheConfig, description="Tier 2: results and answers (1 hour).")
    sessions: SessionCacheConfig = Field(
        default_factory=SessionCacheConfig, description="Tier 3: conversations (30 minutes).")
    dedup: DedupConfig = Field(
        default_factory=DedupConfig, description="De-duplication of identical requests.")


class IngressConfig(StrictModel):
    """The ingress: request bounds, chunking, per-stage budgets and the cache tiers."""

    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Request bounds.")
    chunking: ChunkingConfig = Field(
        default_factory=ChunkingConfig, description="How ingested documents are chunked.")
    stage_timeout_s: float = Field(default=60.0, gt=0, description="Budget of one stage call.")
    stage_timeouts_s: dict[str, float] = Field(
        default_factory=dict, validate_default=True,
        description="Per-stage overrides of stage_timeout_s, by stage name. A stage's own "
        "default applies unless set (the reranker's is 5 s: it is optional, so past its "
        "budget the retriever's order is served, flagged degraded).",
    )
    cache: CacheConfig = Field(default_factory=CacheConfig, description="The three cache tiers.")
    security: SecurityConfig = Field(
        default_factory=SecurityConfig,
        description="API keys and scopes, tenants, per-key limits and the audit log "
        "(docs/security.md). Secrets are references: {env: NAME} or {file: path}.")
    pii: PiiConfig = Field(
        default_factory=PiiConfig,
        description="PII filtering with Presidio's pattern recognizers (offline): a policy "
        "per entity type (off, mask, redact, hash) on ingested text, per tenant, and on "
        "answers (docs/security.md). Off by default.")

    @field_validator("stage_timeouts_s")
    @classmethod
    def _known_positive_budgets(cls, v: dict[str, float]) -> dict[str, float]:
        from ragserve.stages import STAGES  # the stage definition imports this module

        unknown = sorted(set(v) - {s.name for s in STAGES})
        if unknown:
            raise ValueError(f"unknown stages {unknown}; stages are {[s.name for s in STAGES]}")
        if any(t <= 0 for t in v.values()):
            raise ValueError("stage timeouts must be positive")
        defaults = {s.name: s.timeout_s for s in STAGES if s.timeout_s is not None}
        return {**defaults, **v}

    def timeout_for(self, stage: str) -> float:
        """The budget of one call to ``stage``."""
        return self.stage_timeouts_s.get(stage, self.stage_timeout_s)


# --- observability (metrics, traces, logs, error tracking) ------------------------------------


class TokenPrice(StrictModel):
    """The price of one model's tokens, for the estimated-cost metric."""

    prompt_per_1k: float = Field(default=0.0, ge=0, description="Price of 1,000 prompt tokens.")
    completion_per_1k: float = Field(
        default=0.0, ge=0, description="Price of 1,000 completion tokens.")


class MetricsConfig(StrictModel):
    """``ragserve_*`` metrics through Ray's metrics API (exported on each node's metrics port)."""

    enabled: bool = Field(default=True, description="Record ragserve_* metrics.")
    prices: dict[str, TokenPrice] = Field(
        default_factory=dict,
        description="Token prices by model name (or 'backend/model'), for "
        "ragserve_generation_cost_total; models not listed cost 0.")
    currency: str = Field(default="usd", pattern=r"^[a-z]{3}$",
                          description="Currency of `prices` (a label of the cost metric).")
    tenant_label: bool = Field(
        default=False, description="Label request counts by tenant (the caller's principal).")
    max_tenants: int = Field(
        default=50, ge=1, le=1000,
        description="Distinct tenant label values; the rest are counted as 'other'.")


class TracingConfig(StrictModel):
    """OpenTelemetry traces: one per request, a span at the ingress and in each stage."""

    enabled: bool = Field(default=False, description="Export traces (needs `otlp_endpoint`).")
    otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP traces URL, e.g. http://otel-collector:4318/v1/traces.")
    sampling_ratio: float = Field(
        default=0.05, ge=0, le=1,
        description="Share of requests traced (a caller's sampled traceparent is always followed).")
    service_name: str = Field(default="ragserve", description="The `service.name` resource.")
    export_delay_s: float = Field(
        default=5.0, gt=0, le=60,
        description="Longest time a finished span waits before it is sent, in a batch (OTel's "
                    "default 5 s; a full batch of 512 leaves at once). Each send costs ~1 ms of "
                    "CPU, so a short delay taxes a lightly loaded replica.")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Headers sent to the collector (e.g. an API key).")

    @model_validator(mode="after")
    def _endpoint_when_enabled(self) -> "TracingConfig":
        if self.enabled and not self.otlp_endpoint:
            raise ValueError("tracing.enabled needs tracing.otlp_endpoint")
        return self


class LoggingConfig(StrictModel):
    """The service's own log records (never request text: queries appear hashed)."""

    json_format: bool = Field(
        default=True, description="One JSON object per line (request id, trace id, route, ...).")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Level of the `ragserve` loggers.")
    request_log: bool = Field(
        default=True, description="One `ragserve.requests` record per HTTP request.")
    flush_interval_s: float = Field(
        default=0.5, gt=0, le=10,
        description="Longest time a record waits in Serve's log buffer before reaching its file.")


class SentryConfig(StrictModel):
    """Error tracking with sentry-sdk; off without a DSN. PII is never sent."""

    dsn: SecretStr | None = Field(default=None, description="The project's DSN; None: off.")
    environment: str | None = Field(default=None, description="Sentry `environment` tag.")
    sample_rate: float = Field(default=1.0, ge=0, le=1, description="Share of errors sent.")


class ObservabilityConfig(StrictModel):
    """Metrics, traces, logs and error tracking, for the ingress and every stage replica."""

    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="ragserve_* metrics.")
    tracing: TracingConfig = Field(
        default_factory=TracingConfig, description="OpenTelemetry traces (off by default).")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Log records.")
    sentry: SentryConfig = Field(default_factory=SentryConfig, description="Error tracking.")
