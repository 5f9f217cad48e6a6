"""The one way to reorder candidates by scores, shared by the reranker stage and the pipeline
(which orders by the retriever's scores itself when the reranker would only keep them)."""

from __future__ import annotations

from ragserve.schemas import ScoredChunk

__all__ = ["RETRIEVAL_ORDER_NAME", "order_by_scores", "order_by_retrieval", "retrieval_scores"]

RETRIEVAL_ORDER_NAME = "retrieval"
"""The backend name of ordering by the retriever's scores (the reranker's last fallback)."""


def retrieval_scores(chunks: list[ScoredChunk]) -> list[float]:
    """Each chunk's retriever score (``retrieval_score``, else ``score``)."""
    return [c.retrieval_score if c.retrieval_score is not None else c.score for c in chunks]


def order_by_scores(chunks: list[ScoredChunk], scores: list[float], top_n: int) -> list[ScoredChunk]:
    """Sort by ``scores`` (stable: ties keep the retriever's order), set ``score`` to them,
    keep ``retrieval_score`` (filled from the old ``score`` where the retriever left it unset),
    and return the best ``top_n``."""
    if len(scores) != len(chunks):
        raise ValueError(f"{len(scores)} scores for {len(chunks)} chunks")
    order = sorted(range(len(chunks)), key=lambda i: -scores[i])[: max(top_n, 0)]
    return [
        chunks[i].model_copy(update={
            "score": float(scores[i]),
            "retrieval_score": (chunks[i].retrieval_score
                                if chunks[i].retrieval_score is not None else chunks[i].score),
        })
        for i in order
    ]


def order_by_retrieval(chunks: list[ScoredChunk], top_n: int) -> list[ScoredChunk]:
    """The retriever's order, cut to ``top_n``."""
    return order_by_scores(chunks, retrieval_scores(chunks), top_n)
