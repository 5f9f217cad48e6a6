"""Adding a stage is one entry in ``ragserve/stages.py`` plus the stage's own classes.

The test copies the code, adds a ``guard`` stage of kind ``query`` exactly as
docs/architecture.md describes (one ``StageSpec``, a config and processor class, a thin
``deployments/guard.py``) and, in a fresh interpreter, checks that everything that lists stages
picked it up: the app's arguments, per-stage budgets, the fingerprint, the builder's
deployments, timings and backends in responses, readiness, and the read path itself.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SPEC = """
    StageSpec(name="guard", verb="guard", kind="query", config=GuardConfig,
              num_cpus=0.1, max_ongoing_requests=32, timeout_s=2.0),
"""

GUARD_MODULE = '''
"""A query stage: refuses queries with a blocked word."""
from pydantic import Field

from ragserve.config import StrictModel
from ragserve.errors import InvalidRequestError


class GuardConfig(StrictModel):
    blocked: list[str] = Field(default_factory=lambda: ["forbidden"], description="Refused words.")


class WordGuard:
    def __init__(self, config: GuardConfig) -> None:
        self.config = config
        self.seen: list[str] = []

    async def process(self, query: str) -> str:
        self.seen.append(query)
        if any(w in query.lower().split() for w in self.config.blocked):
            raise InvalidRequestError("query refused by the guard")
        return query

    async def health(self) -> dict:
        return {"backend": "word-guard"}
'''

DEPLOYMENT_MODULE = '''
from ragserve.guard import GuardConfig, WordGuard


class GuardDeployment(WordGuard):
    def __init__(self, config: GuardConfig) -> None:
        super().__init__(GuardConfig.model_validate(config))
'''

CHECKS = '''
import asyncio, hashlib

import pytest
from graphs.args import RagAppArgs
from graphs.rag import build_app, deployment_class
from ragserve.config import IngressConfig
from ragserve.errors import InvalidRequestError
from ragserve.guard import WordGuard
from ragserve.pipeline import RAGPipeline, StageSet
from ragserve.schemas import (EmbedderInfo, IngestRequest, RerankResult, ScoredChunk,
                              SearchRequest, StageBackends, StageTimings)
from ragserve.stages import stage

# Arguments, budgets, fingerprint.
args = RagAppArgs.model_validate({"guard": {"config": {"blocked": ["secret"]}}})
assert args.guard.config.blocked == ["secret"]
assert args.guard.deployment.ray_actor_options.num_cpus == 0.1  # the spec's default
scaled = RagAppArgs.model_validate({"guard": {"deployment": {"num_replicas": 2}}})
assert scaled.guard.deployment.num_replicas == 2
assert RagAppArgs().fingerprint() != args.fingerprint()
assert IngressConfig().timeout_for("guard") == 2.0
assert IngressConfig(stage_timeouts_s={"guard": 0.5}).timeout_for("guard") == 0.5

# The builder binds one deployment per stage and hands the ingress its handle by name.
assert deployment_class(stage("guard")).__name__ == "GuardDeployment"
app = build_app(args)
stages = app._bound_deployment.init_args[1]
assert list(stages) == ["guard", "embedder", "retriever", "reranker", "generator"]
assert stages["guard"]._bound_deployment.name == "Guard"

# Responses carry its timing and backend fields.
assert "guard_ms" in StageTimings.model_fields and "guard" in StageBackends.model_fields


class Embedder:
    async def embed(self, texts, kind="passage"):
        return [[float(b) for b in hashlib.sha256(t.encode()).digest()[:3]] for t in texts]
    async def info(self):
        return EmbedderInfo(model="fake", dimension=3, device="cpu", dtype="float32")
    async def health(self):
        return {"backend": "fake"}


class Retriever:
    def __init__(self):
        self.chunks = []
    async def ensure_collection(self, info): pass
    async def health(self): return {"backend": "memory"}
    async def chunk_hashes_many(self, ids): return {i: {} for i in ids}
    async def replace_documents(self, docs):
        self.chunks += [c for _, cs, _ in docs for c in cs]
    async def search(self, vector, top_k, filters=None, *, query_text=None, mode=None):
        return [ScoredChunk(**c.model_dump(), score=1.0) for c in self.chunks][:top_k]


class Reranker:
    async def rerank(self, query, chunks, top_n):
        return RerankResult(chunks=chunks[:top_n], backend="keep")
    async def health(self): return {"backend": "keep"}


async def main():
    guard = WordGuard(args.guard.config)
    stages = StageSet.from_mapping({"guard": guard, "embedder": Embedder(),
                                    "retriever": Retriever(), "reranker": Reranker()})
    p = RAGPipeline(stages)
    await p.startup()
    await p.ingest(IngestRequest(documents=[{"id": "a", "text": "alpha"}]))
    res = await p.search(SearchRequest(query="alpha please"))
    assert guard.seen == ["alpha please"] and res.results
    assert res.timings.guard_ms > 0 and set(res.timings.model_dump()) >= {"guard_ms", "embed_ms"}
    with pytest.raises(InvalidRequestError):
        await p.search(SearchRequest(query="the secret plan"))
    ready, detail = await p.readiness()
    assert ready and detail["guard"]["backend"] == "word-guard"
    assert list(detail) == ["guard", "embedder", "retriever", "reranker"]

asyncio.run(main())
print("stage added")
'''


def test_a_new_stage_is_one_definition_and_its_own_classes(tmp_path):
    for package in ("ragserve", "deployments", "graphs"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    stages_py = tmp_path / "ragserve" / "stages.py"
    source = stages_py.read_text()
    # The one definition: an import of the stage's config and one StageSpec, first in order.
    anchor = "STAGES: tuple[StageSpec, ...] = (\n"
    assert anchor in source
    source = source.replace(anchor, anchor + textwrap.dedent(SPEC).replace("\n", "\n    ", 1))
    source = source.replace("__all__ = [", "from ragserve.guard import GuardConfig  # noqa: E402\n\n__all__ = [", 1)
    stages_py.write_text(source)
    # Its own classes.
    (tmp_path / "ragserve" / "guard.py").write_text(GUARD_MODULE)
    (tmp_path / "deployments" / "guard.py").write_text(DEPLOYMENT_MODULE)

    out = subprocess.run([sys.executable, "-c", CHECKS], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("stage added")
