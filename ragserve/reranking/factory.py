"""Pick the scorer from config."""

from __future__ import annotations

import logging

from ragserve.config import RerankerConfig
from ragserve.reranking.base import Scorer
from ragserve.reranking.cross_encoder import CrossEncoderScorer
from ragserve.reranking.lexical import BestPartScorer, LexicalFusionScorer, RetrievalOrderScorer

__all__ = ["load_scorer", "fallback_scorer"]

log = logging.getLogger("ragserve.reranker")


def fallback_scorer(config: RerankerConfig) -> Scorer:
    if config.fallback == "lexical_fusion":
        return LexicalFusionScorer(config.fusion_weight)
    if config.fallback == "best_part":
        return BestPartScorer(config.best_part_weight)
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
