from ragserve.embedding.base import Embedder
from ragserve.embedding.sentence_transformers import SentenceTransformerEmbedder, pick_device

__all__ = ["Embedder", "SentenceTransformerEmbedder", "pick_device"]
