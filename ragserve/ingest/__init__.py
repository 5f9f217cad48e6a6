"""Ingestion helpers: loading files, token-aware chunking and deterministic ids.

None of this needs Ray or a model; the ingest path of the service and the ``ragserve`` CLI both
use it.
"""

from ragserve.ingest.chunking import TextSplitter, TokenChunker, chunk_document
from ragserve.ingest.ids import CHUNK_ID_NAMESPACE, chunk_id, doc_hash, text_hash
from ragserve.ingest.loaders import load_documents, sanitize_doc_id

__all__ = [
    "TokenChunker",
    "TextSplitter",
    "chunk_document",
    "CHUNK_ID_NAMESPACE",
    "chunk_id",
    "doc_hash",
    "text_hash",
    "load_documents",
    "sanitize_doc_id",
]
