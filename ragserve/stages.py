"""The stages of the graph, named once.

Everything that lists stages reads ``STAGES``: the application's arguments (``graphs.args``),
the builder that binds one deployment per stage (``graphs.rag``), the ingress's stage clients,
per-stage budgets (``IngressConfig.stage_timeouts_s``), readiness, the per-stage fields of
``StageTimings`` and ``StageBackends`` in every response, and the configuration fingerprint
that keys cached answers.

Adding a stage is one ``StageSpec`` here plus its own classes: a config model, a core class
that serves the role its ``kind`` names, and ``deployments/<name>.py`` with a thin
``<Name>Deployment`` (the builder finds it by that convention). The four model stages have a
fixed place in the read path; a stage of kind ``query`` runs before embedding, in the order
listed here, and may rewrite the query or refuse it (a guard, a query rewriter): see
``QueryProcessor`` and ``docs/architecture.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from ragserve.config import (
    EmbedderConfig,
    GeneratorConfig,
    RerankerConfig,
    RetrieverConfig,
    StrictModel,
)

__all__ = ["StageKind", "StageSpec", "STAGES", "QueryProcessor", "stage", "stages_for"]

StageKind = Literal["query", "embedder", "retriever", "reranker", "generator"]
AppMode = Literal["rag", "search"]


@dataclass(frozen=True)
class StageSpec:
    """One stage of the graph."""

    name: str
    """Key everywhere: ``RagAppArgs.<name>``, ``stage_timeouts_s``, readiness, backends,
    ``deployments/<name>.py`` and the Serve deployment ``<Name>``."""
    verb: str
    """Its timing field in responses: ``StageTimings.<verb>_ms``."""
    kind: StageKind
    """Its role in the read path (the Protocol its client satisfies)."""
    config: type[StrictModel]
    """The stage's own settings (``RagAppArgs.<name>.config``)."""
    num_cpus: float
    """Default CPU share per replica: the whole default graph fits a 2-core laptop."""
    max_ongoing_requests: int
    """Default Serve bound of concurrent requests per replica (≥ a batched stage's batch)."""
    timeout_s: float | None = None
    """Default budget of one call; None: the ingress's ``stage_timeout_s``."""
    apps: frozenset[AppMode] = frozenset({"rag", "search"})
    """The applications that include it (``search`` is the graph without a generator)."""
    batched: bool = False
    """Its config has ``batching``, applied through the deployment's ``user_config``."""
    throughput_knobs: tuple[str, ...] = field(default=("batching", "torch_threads", "workers"))
    """Config fields that change speed, not results: left out of the fingerprint."""

    @property
    def deployment_name(self) -> str:
        """The Serve deployment's name (``Embedder``; ``query_rewriter`` → ``QueryRewriter``)."""
        return "".join(part.title() for part in self.name.split("_"))


STAGES: tuple[StageSpec, ...] = (
    StageSpec(name="embedder", verb="embed", kind="embedder", config=EmbedderConfig,
              num_cpus=0.5, max_ongoing_requests=64, batched=True),
    StageSpec(name="retriever", verb="retrieve", kind="retriever", config=RetrieverConfig,
              num_cpus=0.25, max_ongoing_requests=32),
    StageSpec(name="reranker", verb="rerank", kind="reranker", config=RerankerConfig,
              num_cpus=0.25, max_ongoing_requests=16, timeout_s=5.0, batched=True),
    StageSpec(name="generator", verb="generate", kind="generator", config=GeneratorConfig,
              num_cpus=0.5, max_ongoing_requests=8, apps=frozenset({"rag"})),
)


def stage(name: str) -> StageSpec:
    """The spec named ``name`` (``KeyError`` if there is none)."""
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise KeyError(name)


def stages_for(mode: AppMode) -> tuple[StageSpec, ...]:
    """The stages an application of ``mode`` runs, in graph order."""
    return tuple(s for s in STAGES if mode in s.apps)


@runtime_checkable
class QueryProcessor(Protocol):
    """The role of a ``query`` stage: runs before embedding on the cleaned question.

    Returns the text to retrieve with (the same text, or a rewrite). Refusing a query is
    raising ``InvalidRequestError`` (422); failing is any other error (503: the request
    cannot be answered safely without it)."""

    async def process(self, query: str) -> str: ...

    async def health(self) -> dict: ...
