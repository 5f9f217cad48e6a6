"""What every ``Retriever`` does, as tests that each implementation runs.

A concrete test class inherits ``RetrieverContract`` and supplies a ``retriever`` fixture: a
warmed-up backend on an empty store whose collection does not exist yet. The contract's own
``store`` fixture runs ``ensure_collection(EMBEDDER)`` on it. Set ``default_mode`` when the
backend's configured default is not hybrid.

The corpus is tiny and its vectors are basis vectors, so each query has one right answer in
every mode; scores are compared only where the contract fixes them (dense cosine).
"""

from __future__ import annotations

import uuid

import pytest

from ragserve.errors import ConfigurationError, StageUnavailableError
from ragserve.retrieval import Retriever
from ragserve.schemas import Chunk, EmbedderInfo
from ragserve.security.access import Access

__all__ = ["RetrieverContract", "EMBEDDER", "DIM", "make_chunks", "basis"]

DIM = 8
EMBEDDER = EmbedderInfo(model="contract-embedder", dimension=DIM, device="cpu", dtype="float32")
MODES = ("dense", "sparse", "hybrid")


def basis(axis: int, tilt: float = 0.0) -> list[float]:
    """Unit vector along ``axis``, leaning by ``tilt`` towards every other axis."""
    v = [tilt] * DIM
    v[axis] = 1.0
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def make_chunks(doc_id: str, texts: list[str], *, content_type: str = "general",
                doc_hash: str | None = None, **metadata) -> list[Chunk]:
    return [
        Chunk(chunk_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{doc_id}/{i}/{text}")), doc_id=doc_id,
              chunk_index=i, text=text, content_type=content_type, metadata=dict(metadata),
              doc_hash=doc_hash or f"hash-{doc_id}")
        for i, text in enumerate(texts)
    ]


# doc id -> (texts, vectors, content type, metadata); one axis per chunk.
CORPUS = {
    "volcano": (["Volcanic eruptions eject magma and ash into the atmosphere."], [basis(0)],
                "general", {"source": "wiki", "year": 2020, "tags": ["geology", "nature"],
                            "featured": True}),
    "reef": (["Coral reefs shelter a quarter of marine species."], [basis(1)],
             "technical", {"source": "blog", "year": 2021, "tags": ["biology", "nature"],
                           "featured": False}),
    "compiler": (["A compiler translates source code into machine instructions."], [basis(2)],
                 "code", {"source": "wiki", "year": 2022, "tags": ["computing"], "featured": False}),
    "glacier": (["Glaciers carve valleys while flowing downhill.",
                 "Glacial meltwater feeds rivers during summer."], [basis(3), basis(4)],
                "general", {"source": "news", "year": 2021, "tags": ["geology"], "featured": False}),
}
CHUNKS = {d: make_chunks(d, texts, content_type=ct, **meta) for d, (texts, _, ct, meta) in CORPUS.items()}
VECTORS = {d: vectors for d, (_, vectors, _, _) in CORPUS.items()}
ALL = set(CORPUS)

# (query text, axis of its vector, the document that must come first)
QUERIES = [
    ("coral reefs marine species", 1, "reef"),
    ("compiler machine instructions", 2, "compiler"),
    ("magma eruptions", 0, "volcano"),
]

FILTERS = [
    (None, ALL),
    ({"source": "wiki"}, {"volcano", "compiler"}),
    ({"source": ["blog", "news"]}, {"reef", "glacier"}),
    ({"source": "wiki", "year": 2022}, {"compiler"}),
    ({"source": "blog", "year": 2022}, set()),
    ({"year": [2020, 2021.0]}, {"volcano", "reef", "glacier"}),
    ({"year": 2021.0}, {"reef", "glacier"}),
    ({"tags": "geology"}, {"volcano", "glacier"}),
    ({"tags": ["computing", "biology"]}, {"compiler", "reef"}),
    ({"featured": True}, {"volcano"}),
    ({"featured": [True, False]}, ALL),
    ({"featured": [True, "yes"]}, {"volcano"}),  # mixed types: any of them
    ({"doc_id": "reef"}, {"reef"}),
    ({"doc_id": ["reef", "glacier"], "tags": "geology"}, {"glacier"}),
    ({"content_type": "code"}, {"compiler"}),
    ({"source": "absent"}, set()),
    ({"no_document_has_this": "x"}, set()),
]


class RetrieverContract:
    """The ``Retriever`` protocol's promises (``ragserve/retrieval/base.py``), as tests."""

    default_mode = "hybrid"

    @pytest.fixture
    async def store(self, retriever) -> Retriever:
        await retriever.ensure_collection(EMBEDDER)
        return retriever

    @pytest.fixture
    async def corpus(self, store) -> Retriever:
        await store.replace_documents([(d, CHUNKS[d], VECTORS[d]) for d in CORPUS])
        return store

    # ------------------------------------------------------------ collection

    async def test_satisfies_the_protocol(self, retriever):
        assert isinstance(retriever, Retriever)

    async def test_ensure_collection_is_idempotent_and_refuses_another_embedder(self, store):
        await store.ensure_collection(EMBEDDER)
        with pytest.raises(ConfigurationError):
            await store.ensure_collection(EMBEDDER.model_copy(update={"model": "another-model"}))
        with pytest.raises(ConfigurationError):
            await store.ensure_collection(EMBEDDER.model_copy(update={"dimension": DIM * 2}))
        assert await store.count() == 0  # a refusal changes nothing

    async def test_reads_before_ensure_collection_are_configuration_errors(self, retriever):
        assert "backend" in await retriever.health()  # a state, not a fault
        with pytest.raises(ConfigurationError):
            await retriever.count()
        with pytest.raises(ConfigurationError):
            await retriever.search(basis(0), 3)

    async def test_health_is_a_dict_naming_the_backend(self, store):
        health = await store.health()
        assert isinstance(health, dict) and isinstance(health["backend"], str) and health["backend"]

    async def test_closed_retriever_is_unavailable(self, store):
        await store.aclose()
        await store.aclose()  # idempotent
        with pytest.raises(StageUnavailableError):
            await store.count()
        with pytest.raises(StageUnavailableError):
            await store.search(basis(0), 3, query_text="magma", mode="hybrid")

    # ------------------------------------------------------------ writes and reads

    async def test_replace_get_delete_round_trip(self, store):
        chunks = make_chunks("doc-a", ["first part", "second part", "third part"], source="x")
        vectors = [basis(0), basis(1), basis(2)]
        # given out of order: get_document returns chunk_index order
        await store.replace_documents([("doc-a", chunks[::-1], vectors[::-1])])
        assert await store.get_document("doc-a") == chunks
        assert await store.get_document("missing") == []
        assert await store.count() == 3
        assert await store.delete_document("doc-a") == 3
        assert await store.get_document("doc-a") == []
        assert await store.count() == 0
        assert await store.delete_document("doc-a") == 0

    async def test_delete_of_unknown_document_returns_zero(self, corpus):
        assert await corpus.delete_document("never-stored") == 0
        assert await corpus.count() == 5

    async def test_count_is_chunks_over_all_documents(self, corpus):
        assert await corpus.count() == 5
        await corpus.delete_document("glacier")
        assert await corpus.count() == 3

    async def test_rewriting_the_same_chunks_is_idempotent(self, corpus):
        before = ({d: await corpus.get_document(d) for d in CORPUS},
                  await corpus.chunk_hashes_many(list(CORPUS)))
        await corpus.replace_documents([(d, CHUNKS[d], VECTORS[d]) for d in CORPUS])
        await corpus.replace_documents([("reef", CHUNKS["reef"], VECTORS["reef"])])
        assert await corpus.count() == 5
        after = ({d: await corpus.get_document(d) for d in CORPUS},
                 await corpus.chunk_hashes_many(list(CORPUS)))
        assert after == before

    async def test_replace_keeps_only_the_new_chunks_of_each_document(self, corpus):
        kept = CHUNKS["glacier"][0]
        new = make_chunks("glacier", ["Glaciers carve valleys while flowing downhill.",
                                      "Rewritten second chunk."], doc_hash="hash-v2")
        new[0] = kept
        await corpus.replace_documents([("glacier", new, [basis(3), basis(5)])])
        assert await corpus.get_document("glacier") == new
        assert await corpus.get_document("reef") == CHUNKS["reef"]  # others untouched
        assert await corpus.count() == 5
        await corpus.replace_documents([("glacier", [], [])])  # no chunks: no document
        assert await corpus.get_document("glacier") == []
        assert await corpus.count() == 3

    async def test_chunk_hashes_many(self, corpus):
        assert await corpus.chunk_hashes_many([]) == {}
        state = await corpus.chunk_hashes_many(["glacier", "reef", "unknown"])
        assert state == {
            "glacier": {c.chunk_id: "hash-glacier" for c in CHUNKS["glacier"]},
            "reef": {CHUNKS["reef"][0].chunk_id: "hash-reef"},
            "unknown": {},
        }

    async def test_malformed_writes_raise_value_error_and_write_nothing(self, corpus):
        chunks = make_chunks("doc-a", ["a text"])
        good = ("doc-b", make_chunks("doc-b", ["b text"]), [basis(0)])
        bad_uuid = [chunks[0].model_copy(update={"chunk_id": "not-a-uuid"})]
        for bad in [("doc-a", chunks, [basis(0), basis(1)]),  # counts differ
                    ("doc-x", chunks, [basis(0)]),  # chunk of another document
                    ("doc-a", bad_uuid, [basis(0)])]:
            with pytest.raises(ValueError):
                await corpus.replace_documents([good, bad])
        assert await corpus.count() == 5
        assert await corpus.get_document("doc-b") == []

    # ------------------------------------------------------------ search

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize(("text", "axis", "expected"), QUERIES)
    async def test_relevant_chunk_comes_first_in_every_mode(self, corpus, mode, text, axis, expected):
        hits = await corpus.search(basis(axis, tilt=0.1), 3, query_text=text, mode=mode)
        assert hits and hits[0].doc_id == expected
        assert all(h.retrieval_score == h.score for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert hits[0].model_dump(exclude={"score", "retrieval_score"}) == CHUNKS[expected][0].model_dump()

    async def test_dense_score_is_cosine(self, corpus):
        hits = await corpus.search(basis(1), 5, mode="dense")
        assert hits[0].doc_id == "reef" and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert all(h.score == pytest.approx(0.0, abs=1e-4) for h in hits[1:])

    async def test_sparse_returns_only_chunks_sharing_a_term(self, corpus):
        hits = await corpus.search(basis(0), 5, query_text="compiler instructions", mode="sparse")
        assert [h.doc_id for h in hits] == ["compiler"]
        assert await corpus.search(basis(0), 5, query_text="zzyzx", mode="sparse") == []

    @pytest.mark.parametrize("mode", MODES)
    async def test_without_query_text_every_mode_is_dense(self, corpus, mode):
        dense = await corpus.search(basis(3, tilt=0.1), 5, mode="dense")
        hits = await corpus.search(basis(3, tilt=0.1), 5, mode=mode)
        assert [h.chunk_id for h in hits] == [h.chunk_id for h in dense]
        assert hits[0].doc_id == "glacier"

    async def test_mode_none_is_the_configured_default(self, corpus):
        query = dict(query_text="glacial meltwater rivers", vector=basis(2, tilt=0.3), top_k=5)
        default = await corpus.search(mode=None, **query)
        configured = await corpus.search(mode=self.default_mode, **query)
        assert [(h.chunk_id, h.score) for h in default] == [(h.chunk_id, h.score) for h in configured]

    @pytest.mark.parametrize("mode", MODES)
    async def test_top_k_is_respected(self, corpus, mode):
        text = "glaciers coral compiler magma meltwater"  # a term of every chunk
        for top_k in (1, 2, 5):
            hits = await corpus.search(basis(0, tilt=0.2), top_k, query_text=text, mode=mode)
            assert len(hits) == top_k
        hits = await corpus.search(basis(0, tilt=0.2), 50, query_text=text, mode=mode)
        assert len(hits) == 5 and len({h.chunk_id for h in hits}) == 5

    @pytest.mark.parametrize(("filters", "expected"), FILTERS, ids=[str(f) for f, _ in FILTERS])
    async def test_filters(self, corpus, filters, expected):
        hits = await corpus.search(basis(0, tilt=0.2), 10, filters, mode="dense")
        assert {h.doc_id for h in hits} == expected

    @pytest.mark.parametrize("mode", MODES)
    async def test_filters_apply_in_every_mode(self, corpus, mode):
        text = "coral reefs marine species"
        hits = await corpus.search(basis(1), 10, {"source": "wiki"}, query_text=text, mode=mode)
        assert "reef" not in {h.doc_id for h in hits}
        assert {h.doc_id for h in hits} <= {"volcano", "compiler"}
        hits = await corpus.search(basis(0), 10, {"tags": "nature", "year": 2021},
                                   query_text=text, mode=mode)
        assert [h.doc_id for h in hits] == ["reef"]

    async def test_deleted_and_replaced_chunks_are_not_found(self, corpus):
        await corpus.delete_document("reef")
        for mode in MODES:
            hits = await corpus.search(basis(1), 10, query_text="coral reefs", mode=mode)
            assert "reef" not in {h.doc_id for h in hits}
        new = make_chunks("compiler", ["An interpreter runs programs directly."], doc_hash="v2")
        await corpus.replace_documents([("compiler", new, [basis(2)])])
        for mode in MODES:
            hits = await corpus.search(basis(2), 10, query_text="compiler interpreter", mode=mode)
            assert hits[0].chunk_id == new[0].chunk_id
            assert CHUNKS["compiler"][0].chunk_id not in {h.chunk_id for h in hits}

    # ------------------------------------------------------------ tenants and ACLs
    # Two tenants hold the same document ids and texts; ACL groups split one tenant's readers.

    @pytest.fixture
    async def tenants(self, store) -> Retriever:
        for tenant in ("acme", "globex"):
            access = Access(tenant=tenant)
            docs = []
            for d in CORPUS:
                chunks = [c.model_copy(update={
                    "chunk_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{c.chunk_id}")),
                    "tenant": tenant,
                    "acl": ["finance"] if (tenant, d) == ("acme", "reef") else []})
                    for c in CHUNKS[d]]
                docs.append((d, chunks, VECTORS[d]))
            await store.replace_documents(docs, access=access)
        return store

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("filters", [None, {"source": ["wiki", "blog", "news"]},
                                         {"doc_id": ["reef", "volcano"]}])
    async def test_search_sees_only_its_tenant_in_every_mode(self, tenants, mode, filters):
        text = "glaciers coral compiler magma meltwater"
        for tenant in ("acme", "globex"):
            hits = await tenants.search(basis(1, tilt=0.2), 50, filters, query_text=text,
                                        mode=mode, access=Access(tenant=tenant))
            assert hits and {h.tenant for h in hits} == {tenant}
        # a filter naming another tenant widens nothing
        hits = await tenants.search(basis(1), 50, {"tenant": "globex"}, query_text=text,
                                    mode=mode, access=Access(tenant="acme"))
        assert all(h.tenant == "acme" for h in hits)

    @pytest.mark.parametrize("mode", MODES)
    async def test_acl_groups_restrict_reading(self, tenants, mode):
        text = "coral reefs marine species"
        outsider = Access(tenant="acme", groups=("sales",))
        member = Access(tenant="acme", groups=("finance",))
        hits = await tenants.search(basis(1), 10, query_text=text, mode=mode, access=outsider)
        assert "reef" not in {h.doc_id for h in hits}
        hits = await tenants.search(basis(1), 10, query_text=text, mode=mode, access=member)
        assert hits[0].doc_id == "reef" and hits[0].acl == ["finance"]
        tenant_wide = await tenants.search(basis(1), 10, query_text=text, mode=mode,
                                           access=Access(tenant="acme"))
        assert tenant_wide[0].doc_id == "reef"
        assert await tenants.get_document("reef", access=outsider) == []
        assert await tenants.delete_document("reef", access=outsider) == 0
        assert len(await tenants.get_document("reef", access=member)) == 1

    async def test_same_doc_id_in_two_tenants_is_two_documents(self, tenants):
        acme = await tenants.get_document("glacier", access=Access(tenant="acme"))
        globex = await tenants.get_document("glacier", access=Access(tenant="globex"))
        assert len(acme) == len(globex) == 2
        assert {c.tenant for c in acme} == {"acme"} and {c.tenant for c in globex} == {"globex"}
        assert not {c.chunk_id for c in acme} & {c.chunk_id for c in globex}
        assert await tenants.get_document("glacier", access=Access(tenant="initech")) == []
        assert await tenants.delete_document("glacier", access=Access(tenant="initech")) == 0
        hashes = await tenants.chunk_hashes_many(["glacier"], access=Access(tenant="globex"))
        assert set(hashes["glacier"]) == {c.chunk_id for c in globex}
        assert await tenants.delete_document("glacier", access=Access(tenant="acme")) == 2
        assert len(await tenants.get_document("glacier", access=Access(tenant="globex"))) == 2
        # replacing one tenant's document leaves the other's alone
        await tenants.replace_documents([("compiler", [], [])], access=Access(tenant="globex"))
        assert len(await tenants.get_document("compiler", access=Access(tenant="acme"))) == 1
        for mode in MODES:
            hits = await tenants.search(basis(3), 10, query_text="glaciers valleys", mode=mode,
                                        access=Access(tenant="acme"))
            assert "glacier" not in {h.doc_id for h in hits}

    async def test_chunks_of_another_tenant_are_refused(self, store):
        chunks = make_chunks("doc-a", ["a text"])  # tenant "default"
        with pytest.raises(ValueError):
            await store.replace_documents([("doc-a", chunks, [basis(0)])],
                                          access=Access(tenant="acme"))
        assert await store.count() == 0

    async def test_no_access_is_the_default_tenant(self, tenants, corpus):
        hits = await corpus.search(basis(0), 50, query_text="magma", mode="hybrid")
        assert hits and {h.tenant for h in hits} == {"default"}
        assert await corpus.get_document("volcano") == CHUNKS["volcano"]
