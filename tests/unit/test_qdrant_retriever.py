"""QdrantRetriever against a real embedded Qdrant in a temporary folder."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from ragserve.config import RetrieverConfig
from ragserve.errors import ConfigurationError, StageUnavailableError
from ragserve.retrieval import QdrantRetriever, Retriever
from ragserve.schemas import Chunk, EmbedderInfo
from tests.conftest import free_port

DIM = 16
INFO = EmbedderInfo(model="test-embedder", dimension=DIM, device="cpu", dtype="float32")
RNG = np.random.default_rng(0)


def unit(v: np.ndarray) -> list[float]:
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


def make_chunks(doc_id: str, texts: list[str], **metadata) -> tuple[list[Chunk], list[list[float]]]:
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
    return chunks, [unit(RNG.normal(size=DIM)) for _ in chunks]


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
        "embedder_model": "test-embedder", "dimension": DIM, "schema": 2
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


async def test_second_client_on_same_folder_is_a_configuration_error(retriever):
    second = QdrantRetriever(retriever.config)
    with pytest.raises(ConfigurationError, match="one retriever replica"):
        await second.warm_up()


async def test_replace_then_search_round_trips(retriever):
    chunks, vectors = make_chunks("doc-a", ["alpha", "beta", "gamma"], source="wiki", tags=["x"])
    await retriever.replace_document("doc-a", chunks, vectors)

    hits = await retriever.search(vectors[1], top_k=3)
    assert [h.chunk_id for h in hits][0] == chunks[1].chunk_id
    top = hits[0]
    assert top.score == pytest.approx(1.0, abs=1e-4)
    assert top.retrieval_score == top.score
    assert top.model_dump(exclude={"score", "retrieval_score"}) == chunks[1].model_dump()
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert await retriever.get_document("doc-a") == chunks
    assert await retriever.get_document("missing") == []


async def test_replace_with_changed_chunks_keeps_only_new(retriever):
    old, old_vectors = make_chunks("doc-a", ["one", "two", "three"])
    other, other_vectors = make_chunks("doc-b", ["untouched"])
    await retriever.replace_document("doc-a", old, old_vectors)
    await retriever.replace_document("doc-b", other, other_vectors)
    assert await retriever.count() == 4

    new, new_vectors = make_chunks("doc-a", ["one", "two, revised"])
    new[0] = old[0]  # an unchanged chunk keeps its id
    new_vectors[0] = old_vectors[0]
    await retriever.replace_document("doc-a", new, new_vectors)
    assert set(await retriever.chunk_hashes("doc-a")) == {c.chunk_id for c in new}
    assert set(await retriever.chunk_hashes("doc-b")) == {other[0].chunk_id}
    assert await retriever.count() == 3

    await retriever.replace_document("doc-a", new, new_vectors)  # same again: stable
    assert set(await retriever.chunk_hashes("doc-a")) == {c.chunk_id for c in new}
    assert await retriever.count() == 3
    assert [c.text for c in await retriever.get_document("doc-a")] == ["one", "two, revised"]


async def test_chunk_hashes_pages_through_many(retriever):
    chunks, vectors = make_chunks("big", [f"t{i}" for i in range(600)])
    await retriever.replace_document("big", chunks, vectors)
    assert set(await retriever.chunk_hashes("big")) == {c.chunk_id for c in chunks}
    assert len(await retriever.get_document("big")) == 600


async def test_filters_single_value_and_list(retriever):
    for doc, source, year in [("d1", "wiki", 2020), ("d2", "blog", 2021), ("d3", "news", 2022)]:
        chunks, vectors = make_chunks(doc, [f"{doc} text"], source=source, year=year, flag=True)
        await retriever.replace_document(doc, chunks, vectors)
    query = unit(RNG.normal(size=DIM))

    async def docs(filters):
        return {h.doc_id for h in await retriever.search(query, top_k=10, filters=filters)}

    assert await docs(None) == {"d1", "d2", "d3"}
    assert await docs({"source": "blog"}) == {"d2"}
    assert await docs({"source": ["wiki", "news"]}) == {"d1", "d3"}
    assert await docs({"year": [2020, 2021.0]}) == {"d1", "d2"}
    assert await docs({"source": "wiki", "year": 2021}) == set()
    assert await docs({"flag": [True, "yes"]}) == {"d1", "d2", "d3"}
    assert await docs({"source": "absent"}) == set()


async def test_delete_document(retriever):
    chunks, vectors = make_chunks("doc-a", ["a", "b"])
    keep, keep_vectors = make_chunks("doc-b", ["c"])
    await retriever.replace_document("doc-a", chunks, vectors)
    await retriever.replace_document("doc-b", keep, keep_vectors)
    assert await retriever.delete_document("doc-a") == 2
    assert set(await retriever.chunk_hashes("doc-a")) == set()
    assert await retriever.count() == 1
    assert await retriever.delete_document("doc-a") == 0


async def test_replace_rejects_bad_input(retriever):
    chunks, vectors = make_chunks("doc-a", ["a"])
    with pytest.raises(ValueError):
        await retriever.replace_document("doc-a", chunks, vectors + vectors)
    with pytest.raises(ValueError):
        await retriever.replace_document("doc-b", chunks, vectors)
    bad = [chunks[0].model_copy(update={"chunk_id": "not-a-uuid"})]
    with pytest.raises(ValueError):
        await retriever.replace_document("doc-a", bad, vectors)


async def test_unreachable_server_is_stage_unavailable():
    r = QdrantRetriever(RetrieverConfig(url=f"http://127.0.0.1:{free_port()}", timeout_s=1))
    await r.warm_up()
    assert r.name == "qdrant-server"
    try:
        with pytest.raises(StageUnavailableError):
            await r.search([0.1] * DIM, top_k=3)
        with pytest.raises(StageUnavailableError):
            chunks, vectors = make_chunks("doc-a", ["a"])
            await r.replace_document("doc-a", chunks, vectors)
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
    await retriever.replace_document("doc-a", a, a_vectors)
    seen: list[int] = []

    async def writer():
        for i in range(20):
            chunks, vectors = (a, a_vectors) if i % 2 else (b, b_vectors)
            await retriever.replace_document("doc-a", chunks, vectors)

    async def reader():
        for _ in range(40):
            seen.append(len(set(await retriever.chunk_hashes("doc-a"))))

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


async def test_batch_replace_and_state_of_many_documents(retriever):
    a, va = make_chunks("doc-a", ["alpha one", "alpha two"])
    b, vb = make_chunks("doc-b", ["beta"])
    await retriever.replace_documents([("doc-a", a, va), ("doc-b", b, vb)])
    state = await retriever.chunk_hashes_many(["doc-a", "doc-b", "doc-c"])
    assert set(state["doc-a"]) == {c.chunk_id for c in a}
    assert set(state["doc-b"]) == {c.chunk_id for c in b} and state["doc-c"] == {}
    a2, va2 = make_chunks("doc-a", ["alpha rewritten"])
    await retriever.replace_documents([("doc-a", a2, va2), ("doc-b", b, vb)])
    state = await retriever.chunk_hashes_many(["doc-a", "doc-b"])
    assert set(state["doc-a"]) == {a2[0].chunk_id}  # old chunks of doc-a gone
    assert set(state["doc-b"]) == {c.chunk_id for c in b}  # doc-b untouched
    assert await retriever.count() == 2


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

# A vocabulary large enough that two points rarely tie: at a prefetch's cut-off, tied points
# may be taken in either order, by Qdrant as by the index.
WORDS = [a + b for a in ("cell", "gene", "immun", "vacc", "recept", "kinas", "neur", "membr",
                         "enzym", "mutat", "insul", "tumor")
         for b in ("ology", "ase", "ic", "itis", "oma", "gen", "cyte", "plast", "phage", "tide")]


def _random_text(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(3, 30))))


async def _both_paths(r: QdrantRetriever, vector, query: str, mode: str):
    index, r._sparse_index = r._sparse_index, None
    try:
        qdrant = await r.search(vector, 10, query_text=query, mode=mode)  # Qdrant's own scan
    finally:
        r._sparse_index = index
    return qdrant, await r.search(vector, 10, query_text=query, mode=mode)


@pytest.mark.parametrize("fusion", ["dbsf", "rrf"])
async def test_lexical_index_scores_as_qdrant_does_through_writes_and_reopen(tmp_path, fusion):
    rng = np.random.default_rng(7)
    config = RetrieverConfig(path=str(tmp_path / "q"), collection="lex", fusion=fusion)
    r = QdrantRetriever(config)
    await r.warm_up()
    await r.ensure_collection(INFO)
    docs = {f"doc-{i}": [_random_text(rng) for _ in range(int(rng.integers(1, 4)))] for i in range(60)}
    await r.replace_documents([(d, *make_chunks(d, texts)) for d, texts in docs.items()])
    await r.replace_document("doc-1", *make_chunks("doc-1", ["glucagon secretion pathway"]))
    await r.delete_document("doc-2")
    await r.replace_document("doc-3", *make_chunks("doc-3", ["...", "?!"]))  # no terms at all
    queries = [_random_text(rng) for _ in range(15)] + ["glucagon kinase", "unknownword"]
    try:
        for reopened in (False, True):
            if reopened:  # the index is rebuilt from the collection on start-up
                await r.aclose()
                r = QdrantRetriever(config)
                await r.warm_up()
                await r.ensure_collection(INFO)
            assert r._sparse_index is not None and len(r._sparse_index) == await r.count() - 2
            for q in queries:
                v = unit(rng.normal(size=DIM))
                for mode in ("sparse", "hybrid"):
                    qdrant, indexed = await _both_paths(r, v, q, mode)
                    assert [h.score for h in indexed] == pytest.approx([h.score for h in qdrant], abs=1e-5)
                    # equal scores may come in either order: compare ids grouped by score
                    assert sorted((round(h.score, 5), h.chunk_id) for h in indexed) == \
                        sorted((round(h.score, 5), h.chunk_id) for h in qdrant)
                    assert all(h.text for h in indexed)
            hits = await r.search(unit(rng.normal(size=DIM)), 3, query_text="glucagon", mode="sparse")
            assert [h.doc_id for h in hits] == ["doc-1"]  # only points sharing a term
            assert "doc-2" not in {h.doc_id for h in await r.search(
                unit(rng.normal(size=DIM)), 60, query_text=" ".join(WORDS), mode="sparse")}
    finally:
        await r.aclose()


async def test_filtered_hybrid_queries_take_qdrants_path(retriever):
    chunks, vectors = make_chunks("a", ["insulin receptor"], source="x")
    await retriever.replace_document("a", chunks, vectors)
    chunks, vectors = make_chunks("b", ["insulin receptor kinase"], source="y")
    await retriever.replace_document("b", chunks, vectors)
    hits = await retriever.search(vectors[0], 5, {"source": "x"}, query_text="insulin", mode="hybrid")
    assert [h.doc_id for h in hits] == ["a"]
