from ragserve.config import RetrieverConfig
from ragserve.retrieval.base import Retriever
from ragserve.retrieval.qdrant import QdrantRetriever

__all__ = ["Retriever", "QdrantRetriever", "retriever_class"]


def retriever_class(config: RetrieverConfig) -> type[Retriever]:
    """The backend ``config.backend`` names: ``qdrant`` (qdrant-client: local mode or a
    server) or ``edge`` (Qdrant's engine in process, ``ragserve.retrieval.edge``; imported only
    when chosen, so qdrant-edge-py stays optional)."""
    if config.backend == "edge":
        from ragserve.retrieval.edge import EdgeRetriever

        return EdgeRetriever
    return QdrantRetriever
