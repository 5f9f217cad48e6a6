from ragserve.reranking.base import Reranker, Scorer
from ragserve.reranking.cross_encoder import CrossEncoderScorer
from ragserve.reranking.factory import fallback_scorer, load_scorer
from ragserve.reranking.lexical import BestPartScorer, LexicalFusionScorer, RetrievalOrderScorer

__all__ = [
    "Reranker",
    "Scorer",
    "CrossEncoderScorer",
    "BestPartScorer",
    "LexicalFusionScorer",
    "RetrievalOrderScorer",
    "load_scorer",
    "fallback_scorer",
]
