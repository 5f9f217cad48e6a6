"""Pick the scorer from config, and the one way to reorder candidates by a scorer's scores."""

from __future__ import annotations

import logging

from ragserve.config import RerankerConfig
from ragserve.reranking.base import Scorer
from ragserve.reranking.cross_encoder import CrossEncoderScorer
from ragserve.reranking.lexical import LexicalFusionScorer, RetrievalOrderScorer
from ragserve.schemas import ScoredChunk

__all__ = ["load_scorer", "fallback_scorer", "rerank_with", "order_by_scores"]

log = logging.getLogger("ragserve.reranker")


def fallback_scorer(config: RerankerConfig) -> Scorer:
    if config.fallback == "lexical_fusion":
        return LexicalFusionScorer(config.fusion_weight)
    return RetrievalOrderScorer()


def load_scorer(config: RerankerConfig) -> tuple[Scorer, str | None]:
    """The configured cross-encoder, loaded; or the fallback scorer and why.

    Any failure to load the cross-encoder (no network, a bad path, no CUDA) is caught here,
    logged once as a warning, and answered with ``config.fallback``. The reason string is
    ``None`` when the cross-encoder loaded; the deployment reports it as a degraded backend.
    """
    if config.model is None:
        return fallback_scorer(config), "no cross-encoder configured"
    scorer = CrossEncoderScorer(config.model, config.device, config.max_length)
    try:
        scorer.warm_up()
    except Exception as e:  # noqa: BLE001 - every load failure means "use the fallback"
        detail = " ".join(str(e).split())[:300]  # one log line, whatever the exception holds
        reason = f"cross-encoder {config.model!r} failed to load: {type(e).__name__}: {detail}"
        fallback = fallback_scorer(config)
        log.warning("%s; reranking with fallback %r instead", reason, fallback.name)
        return fallback, reason
    return scorer, None


def order_by_scores(
    chunks: list[ScoredChunk], scores: list[float], top_n: int
) -> list[ScoredChunk]:
    """Sort by ``scores`` (stable: ties keep the retriever's order), set ``score`` to them,
    keep ``retrieval_score`` (filled from the old ``score`` where the retriever left it unset),
    and return the best ``top_n``. ``rerank_with`` and batched ``score_many`` callers share it.
    """
    if len(scores) != len(chunks):
        raise ValueError(f"{len(scores)} scores for {len(chunks)} chunks")
    order = sorted(range(len(chunks)), key=lambda i: -scores[i])[: max(top_n, 0)]
    return [
        chunks[i].model_copy(
            update={
                "score": float(scores[i]),
                "retrieval_score": (
                    chunks[i].retrieval_score
                    if chunks[i].retrieval_score is not None
                    else chunks[i].score
                ),
            }
        )
        for i in order
    ]


def rerank_with(
    scorer: Scorer, query: str, chunks: list[ScoredChunk], top_n: int
) -> list[ScoredChunk]:
    return order_by_scores(chunks, scorer.score(query, chunks), top_n)
