"""The peer of the graph benchmark: the pipeline a LangChain user would write — a LangChain
retriever over the same Qdrant collection with the same embedding model, in one FastAPI
process. Runs in .venv-langchain (benchmarks/peers/setup.sh langchain):

    .venv-langchain/bin/python benchmarks/peers/langchain_app.py --qdrant PATH --collection C \
        --model MODEL_DIR --port P

POST /v1/search {"query", "top_k", "rerank_top_n"} → {"results": [{"doc_id", "text", "score"}]}
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from langchain_huggingface import HuggingFaceEmbeddings
from langchain_qdrant import QdrantVectorStore, RetrievalMode
from pydantic import BaseModel
from qdrant_client import QdrantClient


class SearchRequest(BaseModel):
    query: str
    top_k: int = 20
    rerank_top_n: int = 5


def build(qdrant: str, collection: str, model: str) -> FastAPI:
    embeddings = HuggingFaceEmbeddings(model_name=model, encode_kwargs={"normalize_embeddings": True})
    store = QdrantVectorStore(
        client=QdrantClient(path=qdrant), collection_name=collection, embedding=embeddings,
        vector_name="dense", retrieval_mode=RetrievalMode.DENSE,
        content_payload_key="text", metadata_payload_key="metadata",
    )
    app = FastAPI()

    @app.post("/v1/search")
    async def search(req: SearchRequest) -> dict:
        docs = await store.asimilarity_search_with_score(req.query, k=req.top_k)
        return {"results": [{"text": d.page_content, "score": s, "metadata": d.metadata}
                            for d, s in docs[: req.rerank_top_n]]}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--qdrant", required=True)
    ap.add_argument("--collection", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    uvicorn.run(build(a.qdrant, a.collection, a.model), host="127.0.0.1", port=a.port,
                log_level="warning")
