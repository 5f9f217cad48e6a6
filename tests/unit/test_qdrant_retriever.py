"""QdrantRetriever against a real embedded Qdrant in a temporary folder: what only this backend
does. What every retriever does is in the contract (``test_retriever_contract.py``)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from ragserve.config import RetrieverConfig
from ragserve.errors import ConfigurationError, StageUnavailableError
from ragserve.lexical import ANALYZER_ID
from ragserve.retrieval import QdrantRetriever, Retriever
from ragserve.retrieval.sparse import term_index
from ragserve.schemas import Chunk, EmbedderInfo
from tests.conftest import free_port

DIM = 16
INFO = EmbedderInfo(model="test-embedder", dimension=DIM, device="cpu", dtype="float32")
RNG = np.random.default_rng(0)


def unit(v: np.ndarray) -> list[float]:
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


def make_chunks(doc_id: str, texts: list[str], rng: np.random.Generator = RNG,
                **metadata) -> tuple[list[Chunk], list[list[float]]]:
    chunks = [
        Chunk(
            chunk_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{doc_id}/{i}/{text}")),
            doc_id=doc_id,
            chunk_index=i,
            text=text,
            content_type="technical",
            metadata=dict(metadata),
            doc_hash=f"hash-{doc_id}",
        )
        for i, text in enumerate(texts)
    ]
    return chunks, [unit(rng.normal(size=DIM)) for _ in chunks]


async def stored_ids(r: QdrantRetriever, doc_id: str) -> set[str]:
    return set((await r.chunk_hashes_many([doc_id]))[doc_id])


@pytest.fixture
async def retriever(tmp_path):
    r = QdrantRetriever(RetrieverConfig(path=str(tmp_path / "qdrant"), collection="t"))
    await r.warm_up()
    await r.ensure_collection(INFO)
    yield r
    await r.aclose()


async def test_satisfies_protocol_and_names(retriever):
    assert isinstance(retriever, Retriever)
    assert retriever.name == "qdrant-local"
    assert await retriever.health() == {
        "backend": "qdrant-local", "collection": "t", "collection_exists": True, "points": 0
    }


async def test_collection_metadata_and_reopen_checks(tmp_path):
    config = RetrieverConfig(path=str(tmp_path / "q"), collection="c")
    r = QdrantRetriever(config)
    await r.warm_up()
    await r.ensure_collection(INFO)
    info = await r.client.get_collection("c")
    assert info.config.metadata == {
        "embedder_model": "test-embedder", "dimension": DIM, "schema": 2,
        "analyzer": ANALYZER_ID,
    }
    assert info.config.params.vectors["dense"].size == DIM
    await r.aclose()

    for other, expect in [
        (INFO, None),
        (INFO.model_copy(update={"model": "another-model"}), "another-model"),
        (INFO.model_copy(update={"dimension": DIM * 2}), str(DIM * 2)),
    ]:
        r = QdrantRetriever(config)
        await r.warm_up()
        try:
            if expect is None:
                await r.ensure_collection(other)
            else:
                with pytest.raises(ConfigurationError) as err:
                    await r.ensure_collection(other)
                message = str(err.value)
                assert "test-embedder" in message and expect in message
                assert "re-index" in message
        finally:
            await r.aclose()


async def _old_collection(path, *, metadata: dict, sparse: bool = True) -> None:
    """A collection laid out as an earlier ragserve built it, through the raw client."""
    from qdrant_client import AsyncQdrantClient
    from qdrant_client import models as qm

    client = AsyncQdrantClient(path=str(path))
    try:
        await client.create_collection(
            "old",
            vectors_config={"dense": qm.VectorParams(size=DIM, distance=qm.Distance.COSINE)},
            sparse_vectors_config={"lexical": qm.SparseVectorParams(modifier=qm.Modifier.IDF)}
            if sparse else None,
            metadata=metadata,
        )
        vector: dict = {"dense": unit(np.ones(DIM))}
        if sparse:  # the old four-suffix stemmer's terms: "process" stored as "proces"
            vector["lexical"] = qm.SparseVector(indices=[term_index("proces")], values=[1.0])
        await client.upsert("old", [qm.PointStruct(
            id=str(uuid.uuid4()), vector=vector,
            payload={"doc_id": "d", "text": "process", "tenant": "default", "acl": []})])
    finally:
        await client.close()


@pytest.mark.parametrize("stored", [None, "four-suffix-v0"])
async def test_an_index_built_with_another_analyzer_is_refused_at_start_up(tmp_path, stored):
    meta = {"embedder_model": INFO.model, "dimension": DIM, "schema": 2}
    if stored is not None:
        meta["analyzer"] = stored
    await _old_collection(tmp_path / "q", metadata=meta)
    r = QdrantRetriever(RetrieverConfig(path=str(tmp_path / "q"), collection="old"))
    await r.warm_up()
    try:
        with pytest.raises(ConfigurationError) as err:
            await r.ensure_collection(INFO)
        message = str(err.value)
        assert ANALYZER_ID in message and "Re-index" in message
        assert (stored or "no recorded analyzer") in message
        assert err.value.details["stored_analyzer"] == stored
        assert r._mirror is None  # refused before serving anything from it
    finally:
        await r.aclose()


async def test_an_index_without_lexical_vectors_needs_no_analyzer(tmp_path):
    # Built before hybrid search: dense only, so no analysis of text is stored to mismatch.
    await _old_collection(tmp_path / "q", metadata={"embedder_model": INFO.model,
                                                    "dimension": DIM, "schema": 1}, sparse=False)
    r = QdrantRetriever(RetrieverConfig(path=str(tmp_path / "q"), collection="old"))
    await r.warm_up()
    try:
        await r.ensure_collection(INFO)
        hits = await r.search(unit(np.ones(DIM)), 3, query_text="process", mode="hybrid")
        assert [h.doc_id for h in hits] == ["d"]  # served dense
    finally:
        await r.aclose()


async def test_second_client_on_same_folder_is_a_configuration_error(retriever):
    second = QdrantRetriever(retriever.config)
    with pytest.raises(ConfigurationError, match="one retriever replica"):
        await second.warm_up()


async def test_chunk_hashes_pages_through_many(retriever):
    chunks, vectors = make_chunks("big", [f"t{i}" for i in range(600)])
    await retriever.replace_documents([("big", chunks, vectors)])
    assert await stored_ids(retriever, "big") == {c.chunk_id for c in chunks}
    assert len(await retriever.get_document("big")) == 600


async def test_unreachable_server_is_stage_unavailable():
    r = QdrantRetriever(RetrieverConfig(url=f"http://127.0.0.1:{free_port()}", timeout_s=1))
    await r.warm_up()
    assert r.name == "qdrant-server"
    try:
        with pytest.raises(StageUnavailableError):
            await r.search([0.1] * DIM, top_k=3)
        with pytest.raises(StageUnavailableError):
            chunks, vectors = make_chunks("doc-a", ["a"])
            await r.replace_documents([("doc-a", chunks, vectors)])
        with pytest.raises(StageUnavailableError):
            await r.health()
    finally:
        await r.aclose()


async def test_not_warmed_up_is_stage_unavailable(tmp_path):
    r = QdrantRetriever(RetrieverConfig(path=str(tmp_path / "q")))
    with pytest.raises(StageUnavailableError):
        await r.count()


async def test_readers_never_see_a_replaced_document_missing(retriever):
    a, a_vectors = make_chunks("doc-a", ["v1 first", "v1 second"])
    b, b_vectors = make_chunks("doc-a", ["v2 only"])
    await retriever.replace_documents([("doc-a", a, a_vectors)])
    seen: list[int] = []

    async def writer():
        for i in range(20):
            chunks, vectors = (a, a_vectors) if i % 2 else (b, b_vectors)
            await retriever.replace_documents([("doc-a", chunks, vectors)])

    async def reader():
        for _ in range(40):
            seen.append(len(await stored_ids(retriever, "doc-a")))

    import asyncio

    await asyncio.gather(writer(), reader(), reader())
    assert seen and 0 not in seen


@pytest.mark.parametrize(
    ("status", "error"),
    [(503, StageUnavailableError), (429, StageUnavailableError), (401, ConfigurationError),
     (404, ConfigurationError)],
)
def test_server_error_statuses_map_to_ragserve_errors(status, error):
    import httpx
    from qdrant_client.http.exceptions import UnexpectedResponse

    r = QdrantRetriever(RetrieverConfig(url="http://qdrant:6333"))
    with pytest.raises(error):
        with r._errors("search"):
            raise UnexpectedResponse(status, "x", b"", httpx.Headers())


async def test_sparse_and_hybrid_modes_rank_by_terms(retriever):
    # Dense vectors point the wrong way on purpose: only the lexical side can find "quokka".
    a, _ = make_chunks("doc-a", ["The quokka is a small marsupial found on Rottnest Island."])
    b, _ = make_chunks("doc-b", ["Kangaroos are large marsupials."])
    c, _ = make_chunks("doc-c", ["Unrelated text about databases."])
    q = unit(np.ones(DIM))
    far = [unit(-np.ones(DIM))]
    near = [unit(np.ones(DIM) + 0.01)]
    await retriever.replace_documents([("doc-a", a, far), ("doc-b", b, near), ("doc-c", c, near)])
    dense = await retriever.search(q, 3, query_text="quokka island", mode="dense")
    assert dense[-1].doc_id == "doc-a"
    sparse = await retriever.search(q, 3, query_text="quokka island", mode="sparse")
    assert [h.doc_id for h in sparse] == ["doc-a"]  # only documents sharing a term
    hybrid = await retriever.search(q, 3, query_text="quokka island", mode="hybrid")
    assert hybrid[0].doc_id == "doc-a" and {h.doc_id for h in hybrid} == {"doc-a", "doc-b", "doc-c"}
    assert (await retriever.search(q, 3, mode="sparse"))[0].doc_id in {"doc-b", "doc-c"}  # no text: dense


# ------------------------------------------------------------ local mode's lexical index

# At a prefetch's cut-off, tied points may be taken in either order, by Qdrant as by the index,
# and then the fused scores differ. A large vocabulary and documents of distinct lengths (so
# that no two weigh a shared term the same) keep ties out.
WORDS = [a + b for a in ("cell", "gene", "immun", "vacc", "recept", "kinas", "neur", "membr",
                         "enzym", "mutat", "insul", "tumor")
         for b in ("ology", "ase", "ic", "itis", "oma", "gen", "cyte", "plast", "phage", "tide")]


def _random_text(rng: np.random.Generator, size: int | None = None) -> str:
    return " ".join(rng.choice(WORDS, size=size or int(rng.integers(3, 30))))


async def _both_paths(r: QdrantRetriever, vector, query: str, mode: str):
    index, r._mirror = r._mirror, None
    try:
        qdrant = await r.search(vector, 10, query_text=query, mode=mode)  # Qdrant's own scan
    finally:
        r._mirror = index
    return qdrant, await r.search(vector, 10, query_text=query, mode=mode)


@pytest.mark.parametrize("fusion", ["dbsf", "rrf"])
async def test_lexical_index_scores_as_qdrant_does_through_writes_and_reopen(tmp_path, fusion):
    rng = np.random.default_rng(7)
    sizes = iter(rng.permutation(np.arange(3, 240)).tolist())
    config = RetrieverConfig(path=str(tmp_path / "q"), collection="lex", fusion=fusion)
    r = QdrantRetriever(config)
    await r.warm_up()
    await r.ensure_collection(INFO)
    docs = {f"doc-{i}": [_random_text(rng, next(sizes)) for _ in range(int(rng.integers(1, 4)))]
            for i in range(60)}
    await r.replace_documents([(d, *make_chunks(d, texts)) for d, texts in docs.items()])
    await r.replace_documents([("doc-1", *make_chunks("doc-1", ["glucagon secretion pathway"]))])
    await r.delete_document("doc-2")
    await r.replace_documents([("doc-3", *make_chunks("doc-3", ["...", "?!"]))])  # no terms at all
    queries = [_random_text(rng) for _ in range(15)] + ["glucagon kinase", "unknownword"]
    try:
        for reopened in (False, True):
            if reopened:  # the index is rebuilt from the collection on start-up
                await r.aclose()
                r = QdrantRetriever(config)
                await r.warm_up()
                await r.ensure_collection(INFO)
            assert r._mirror is not None and len(r._mirror) == await r.count() - 2
            for q in queries:
                v = unit(rng.normal(size=DIM))
                for mode in ("sparse", "hybrid"):
                    qdrant, indexed = await _both_paths(r, v, q, mode)
                    assert [h.score for h in indexed] == pytest.approx([h.score for h in qdrant], abs=1e-5)
                    # equal scores may come in either order: the same points, each scored alike
                    # (float32 on both sides: compare within a tolerance, not by rounding)
                    by_id = {h.chunk_id: h.score for h in qdrant}
                    assert {h.chunk_id for h in indexed} == set(by_id)
                    assert all(h.score == pytest.approx(by_id[h.chunk_id], abs=1e-5) for h in indexed)
                    assert all(h.text for h in indexed)
            hits = await r.search(unit(rng.normal(size=DIM)), 3, query_text="glucagon", mode="sparse")
            assert [h.doc_id for h in hits] == ["doc-1"]  # only points sharing a term
            assert "doc-2" not in {h.doc_id for h in await r.search(
                unit(rng.normal(size=DIM)), 60, query_text=" ".join(WORDS), mode="sparse")}
    finally:
        await r.aclose()


async def test_filtered_hybrid_queries_take_qdrants_path(retriever):
    chunks, vectors = make_chunks("a", ["insulin receptor"], source="x")
    await retriever.replace_documents([("a", chunks, vectors)])
    chunks, vectors = make_chunks("b", ["insulin receptor kinase"], source="y")
    await retriever.replace_documents([("b", chunks, vectors)])
    hits = await retriever.search(vectors[0], 5, {"source": "x"}, query_text="insulin", mode="hybrid")
    assert [h.doc_id for h in hits] == ["a"]


async def test_the_lexical_mirror_is_rebuilt_after_reopening_the_client(retriever):
    await retriever.replace_documents([("a", *make_chunks("a", ["insulin receptor"]))])
    await retriever.aclose()  # the mirror belonged to the closed client
    assert retriever._mirror is None
    await retriever.warm_up()
    await retriever.ensure_collection(INFO)
    assert retriever._mirror is not None and len(retriever._mirror) == 1
    hits = await retriever.search(unit(RNG.normal(size=DIM)), 3, query_text="insulin", mode="sparse")
    assert [h.doc_id for h in hits] == ["a"]


def test_hybrid_prefetch_depth_has_a_floor():
    config = RetrieverConfig()
    assert config.prefetch_depth(20) == 100  # a small top_k still fuses 100 per side
    assert config.prefetch_depth(100) == 200  # beyond the floor: factor × top_k
    assert RetrieverConfig(prefetch_min=1).prefetch_depth(20) == 40


async def test_hybrid_fusion_sees_the_prefetch_floor_not_just_top_k(tmp_path):
    # DBSF normalises each side over the candidates it got: with the floor, what a top-1
    # query fuses is the same list a top-50 query fuses, so its best hit is the same.
    rng = np.random.default_rng(3)
    r = QdrantRetriever(RetrieverConfig(path=str(tmp_path / "q"), collection="depth"))
    await r.warm_up()
    try:
        await r.ensure_collection(INFO)
        docs = {f"d{i}": [_random_text(rng)] for i in range(80)}
        await r.replace_documents([(d, *make_chunks(d, t, rng)) for d, t in docs.items()])
        for _ in range(5):
            v, q = unit(rng.normal(size=DIM)), _random_text(rng, 4)
            assert (await r.search(v, 1, query_text=q, mode="hybrid"))[0].chunk_id == \
                (await r.search(v, 50, query_text=q, mode="hybrid"))[0].chunk_id
    finally:
        await r.aclose()
