from ragserve.retrieval.base import Retriever
from ragserve.retrieval.qdrant import QdrantRetriever

__all__ = ["Retriever", "QdrantRetriever"]
