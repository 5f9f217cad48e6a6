from ragserve.embedding.base import Embedder, TextEncoder
from ragserve.embedding.local import LocalEmbedder
from ragserve.embedding.sentence_transformers import SentenceTransformerEmbedder

__all__ = ["Embedder", "TextEncoder", "LocalEmbedder", "SentenceTransformerEmbedder"]
