"""The stage objects one pipeline runs, typed by their roles and ordered by ``STAGES``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from ragserve.embedding.base import Embedder
from ragserve.generation.base import Generator
from ragserve.reranking.base import Reranker
from ragserve.retrieval.base import Retriever
from ragserve.stages import STAGES, QueryProcessor

__all__ = ["StageSet"]


@dataclass
class StageSet:
    embedder: Embedder
    retriever: Retriever
    reranker: Reranker
    generator: Generator | None = None
    query: dict[str, QueryProcessor] = field(default_factory=dict)
    """Stages of kind ``query``, by name, in the order they run (before embedding)."""

    @classmethod
    def from_mapping(cls, stages: Mapping[str, Any]) -> "StageSet":
        """From ``{stage name: stage object}`` (the ingress's stage clients): each is placed by
        its spec's kind. Names not in ``STAGES`` are an error; the generator may be absent
        (a search-only application)."""
        unknown = sorted(set(stages) - {s.name for s in STAGES})
        if unknown:
            raise ValueError(f"unknown stages {unknown}")
        by_kind: dict[str, Any] = {}
        query: dict[str, QueryProcessor] = {}
        for spec in STAGES:
            if spec.name not in stages or stages[spec.name] is None:
                continue
            if spec.kind == "query":
                query[spec.name] = stages[spec.name]
            else:
                by_kind[spec.kind] = stages[spec.name]
        missing = {"embedder", "retriever", "reranker"} - set(by_kind)
        if missing:
            raise ValueError(f"the pipeline needs stages of kind {sorted(missing)}")
        return cls(embedder=by_kind["embedder"], retriever=by_kind["retriever"],
                   reranker=by_kind["reranker"], generator=by_kind.get("generator"), query=query)

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(name, stage)`` for every stage present, in ``STAGES`` order."""
        by_kind = {"embedder": self.embedder, "retriever": self.retriever,
                   "reranker": self.reranker, "generator": self.generator}
        for spec in STAGES:
            obj = self.query.get(spec.name) if spec.kind == "query" else by_kind.get(spec.kind)
            if obj is not None:
                yield spec.name, obj

    def name_of(self, kind: str) -> str:
        """The name of the stage of ``kind`` (``embedder``, ...) in ``STAGES``."""
        return next(s.name for s in STAGES if s.kind == kind)
