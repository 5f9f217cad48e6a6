"""The retriever role: an index of chunks, searched by vector, by terms, or both.

Every backend, and every stand-in for one in tests, passes ``tests/contracts/retriever.py``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ragserve.schemas import Chunk, EmbedderInfo, Filters, ScoredChunk
from ragserve.security.access import Access

__all__ = ["Retriever"]


@runtime_checkable
class Retriever(Protocol):
    """What callers (the pipeline, the retriever deployment, the evaluation runner) use.

    Every method is async. ``__init__`` only stores configuration; callers then run
    ``warm_up()`` (opens the backend) and ``ensure_collection()`` before anything else. After
    ``aclose()``, and before ``warm_up()`` for a backend that has something to open, every other
    method raises ``StageUnavailableError``. Failures are typed:

    - ``StageUnavailableError`` (or its ``StageTimeoutError``): the backend cannot answer now;
      retrying may help.
    - ``ConfigurationError``: retrying cannot help (a rejected credential; a collection built
      with another embedder; reads and writes before ``ensure_collection`` created it).
    - ``ValueError``: the caller passed malformed chunks (a bug upstream, not a client error).

    Tenants and ACLs: every document-level method takes ``access`` (None means
    ``Access()``: tenant ``default``, every group). A document is identified by (tenant, doc
    id): the same id in two tenants is two documents. Reads (``search``, ``get_document``,
    ``delete_document``) see only chunks ``access.can_read``; writes (``chunk_hashes_many``,
    ``replace_documents``) act within ``access.tenant``, and ``replace_documents`` refuses
    (``ValueError``) chunks of another tenant. A chunk stored without a tenant belongs to
    ``default``. The constraint is applied inside the backend, whatever ``filters`` say.
    """

    async def warm_up(self) -> None:
        """Open the backend (client, local folder). Idempotent.

        Raises ``ConfigurationError`` when the backend cannot be opened as configured (a local
        folder already held by another process)."""

    async def aclose(self) -> None:
        """Release the backend. Idempotent; never raises."""

    async def ensure_collection(self, embedder: EmbedderInfo) -> None:
        """Create the collection for this embedder, or check an existing one matches it.

        Idempotent. Raises ``ConfigurationError`` when the stored index was built with another
        model or dimension: mixing vectors from two models silently corrupts search."""

    async def search(
        self,
        vector: list[float],
        top_k: int,
        filters: Filters | None = None,
        *,
        query_text: str | None = None,
        mode: str | None = None,
        access: Access | None = None,
    ) -> list[ScoredChunk]:
        """At most ``top_k`` chunks, best first, each with ``retrieval_score == score``.

        ``mode``: ``"dense"`` ranks by cosine similarity to ``vector``; ``"sparse"`` by BM25
        of ``query_text``'s terms and returns only chunks sharing a term with it; ``"hybrid"``
        fuses both rankings. ``None`` means the backend's configured default. Without
        ``query_text`` (or without lexical data in the index) every mode is dense.

        ``filters`` maps a field to an exact value or to a list of values (any of them
        matches); several fields must all match (AND). ``doc_id`` and ``content_type`` are the
        chunk's own fields, any other name is a key of its metadata; a metadata list matches
        when one of its elements does. Whole-number floats match integers. A field that no
        chunk has matches nothing."""

    async def chunk_hashes_many(self, doc_ids: list[str], *,
                                access: Access | None = None) -> dict[str, dict[str, str]]:
        """doc id -> {chunk id -> document hash} of the stored chunks, for every requested
        id (an empty dict for a document not stored).

        Ingestion compares these with re-sent documents' chunk ids and hashes to skip
        unchanged documents before embedding anything."""

    async def replace_documents(
        self, documents: list[tuple[str, list[Chunk], list[list[float]]]], *,
        access: Access | None = None,
    ) -> None:
        """Make each ``(doc_id, chunks, vectors)``'s chunks the document's only chunks, all in
        one update; an empty chunk list removes the document.

        Idempotent: re-sending identical chunks leaves the same ids, payloads and count.
        Readers never see a replaced document missing. Raises ``ValueError``, before writing
        anything, when chunks and vectors differ in number, a chunk belongs to another
        document, or a chunk id is not a canonical UUID string."""

    async def get_document(self, doc_id: str, *, access: Access | None = None) -> list[Chunk]:
        """The document's chunks in ``chunk_index`` order; ``[]`` when it is not stored."""

    async def delete_document(self, doc_id: str, *, access: Access | None = None) -> int:
        """Remove every chunk of the document; returns how many there were (0 when none)."""

    async def count(self) -> int:
        """How many chunks are stored, over every document."""

    async def health(self) -> dict:
        """Backend state; always has ``"backend"`` (the backend's name).

        Raises ``StageUnavailableError`` only when the backend does not answer: a collection
        not created yet is a state, not a fault."""
