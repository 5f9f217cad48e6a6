"""Reranker, retriever and generator deployments built directly (no Serve needed where the
class has no ``@serve.batch``) or in a replica (where it does)."""

from __future__ import annotations

import pytest
from ray import serve

from deployments.generator import GeneratorDeployment
from deployments.reranker import RerankerDeployment
from deployments.retriever import RetrieverDeployment
from ragserve.config import ExtractiveGeneratorConfig, GeneratorConfig, RerankerConfig, RetrieverConfig
from ragserve.errors import ConfigurationError
from ragserve.schemas import Chunk, EmbedderInfo, GenerationRequest, ScoredChunk
from tests.conftest import construct


def _chunk(i: int, text: str, score: float) -> ScoredChunk:
    return ScoredChunk(chunk_id=f"00000000-0000-0000-0000-{i:012d}", doc_id=f"d{i}", chunk_index=0,
                       text=text, score=score, retrieval_score=score)


# Serve awaits the async __del__ on shutdown; built by hand, the object's GC cannot.
@pytest.mark.filterwarnings("ignore:coroutine 'RetrieverDeployment.__del__' was never awaited")
async def test_retriever_deployment_round_trip_and_mismatch(tmp_path):
    dep = await construct(RetrieverDeployment, RetrieverConfig(path=str(tmp_path / "q"), collection="c"))
    info = EmbedderInfo(model="m", dimension=4, device="cpu", dtype="float32")
    await dep.ensure_collection(info)
    chunk = Chunk(chunk_id="6f1c2c1e-7d1e-5d0e-9a55-6b2f0a3b9a11", doc_id="doc", chunk_index=0, text="hello")
    await dep.replace_documents([("doc", [chunk], [[1.0, 0.0, 0.0, 0.0]])])
    assert await dep.chunk_hashes_many(["doc", "none"]) == {"doc": {chunk.chunk_id: ""}, "none": {}}
    hits = await dep.search([1.0, 0.0, 0.0, 0.0], 5)
    assert hits[0].doc_id == "doc" and hits[0].text == "hello"
    assert (await dep.health())["points"] == 1
    with pytest.raises(ConfigurationError):
        await dep.ensure_collection(info.model_copy(update={"dimension": 8}))
    await dep.__del__()


async def test_generator_deployment_extractive_cites_passage():
    dep = await construct(GeneratorDeployment, GeneratorConfig(backend=ExtractiveGeneratorConfig()))
    req = GenerationRequest(
        query="Which planet has the Great Red Spot?",
        passages=[_chunk(1, "Jupiter has the Great Red Spot, a giant storm.", 0.9),
                  _chunk(2, "Mars is red because of iron oxide.", 0.5)],
        max_tokens=64,
    )
    res = await dep.generate(req)
    assert "Jupiter" in res.text and 1 in res.cited and res.backend == "extractive"
    items = [i async for i in dep.stream(req)]
    assert items[-1]["result"].text == "".join(i["delta"] for i in items[:-1])
    assert (await dep.health())["backend"] == "extractive"


@pytest.mark.slow
def test_reranker_deployment_falls_back_and_says_so(serve_instance):
    dep = serve.deployment(RerankerDeployment, name="Reranker").options(
        max_ongoing_requests=16, ray_actor_options={"num_cpus": 0.25}
    )
    handle = serve.run(dep.bind(RerankerConfig(model="no/such-cross-encoder", fallback="lexical_fusion")),
                       name="reranker-test", route_prefix=None)
    try:
        chunks = [_chunk(1, "bananas are yellow fruit", 0.5),
                  _chunk(2, "the kubernetes operator deploys ray clusters", 0.5),
                  _chunk(3, "unrelated text about weather", 0.5)]
        res = handle.rerank.remote("kubernetes operator for ray", chunks, 2).result(timeout_s=60)
        assert res.backend == "lexical_fusion"
        assert [c.doc_id for c in res.chunks][0] == "d2" and len(res.chunks) == 2
        health = handle.health.remote().result(timeout_s=30)
        assert health["backend"] == "lexical_fusion" and "no/such-cross-encoder" in health["fallback_reason"]
    finally:
        serve.delete("reranker-test")
