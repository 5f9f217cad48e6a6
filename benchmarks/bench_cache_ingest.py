"""The embedding cache on a re-ingest: the same corpus indexed twice, into two fresh indexes
(a rebuilt index, a second environment, a new collection) sharing one Redis.

    .venv/bin/python benchmarks/bench_cache_ingest.py --corpus ../shared/data/scifact --docs 1000

Runs the service's own pipeline in process (bundled MiniLM, Qdrant local mode in a temp folder,
the cache layer the ingress uses) against a redis-server it starts on a free port. Prints
time and embedding-cache hits/misses for each pass.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import free_port  # noqa: E402


async def run(args) -> None:
    from ragserve.cache import CacheLayer
    from ragserve.config import CacheConfig, EmbedderConfig, RetrieverConfig
    from ragserve.embedding import SentenceTransformerEmbedder
    from ragserve.embedding.local import LocalEmbedder
    from ragserve.pipeline import RAGPipeline, StageSet
    from ragserve.reranking.lexical import RetrievalOrderScorer
    from ragserve.reranking.local import ScorerReranker
    from ragserve.retrieval.qdrant import QdrantRetriever
    from ragserve.schemas import IngestRequest

    docs = []
    with open(Path(args.corpus) / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            docs.append({"id": f"d{d['_id']}", "text": f"{d.get('title', '')}\n\n{d['text']}"})
            if len(docs) >= args.docs:
                break
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    backend = SentenceTransformerEmbedder(EmbedderConfig())
    backend.warm_up()
    tmp = Path(tempfile.mkdtemp(prefix="ragserve-cache-ingest-"))
    try:
        time.sleep(0.5)
        for label in ("first ingest (cold cache)", "second ingest (warm cache)"):
            layer = CacheLayer.from_config(CacheConfig(redis_url=f"redis://127.0.0.1:{port}/0"))
            retriever = QdrantRetriever(RetrieverConfig(path=str(tmp / label[:5]), collection="c"))
            await retriever.warm_up()
            pipe = layer.pipeline(RAGPipeline(StageSet(
                embedder=layer.embedder(LocalEmbedder(backend)), retriever=retriever,
                reranker=ScorerReranker(RetrievalOrderScorer()))))
            await pipe.startup()
            hits = misses = chunks = 0
            t = time.perf_counter()
            for i in range(0, len(docs), 64):
                r = await pipe.ingest(IngestRequest.model_validate({"documents": docs[i:i + 64]}))
                hits += r.cache.embedding_hits
                misses += r.cache.embedding_misses
                chunks += r.chunks_embedded
            took = time.perf_counter() - t
            print(f"{label}: {len(docs)} documents, {chunks} chunks in {took:.1f} s "
                  f"({len(docs) / took:.0f} docs/s); embedding cache {hits} hits / {misses} "
                  f"misses, hit ratio {hits / max(1, hits + misses):.2f}", flush=True)
            await retriever.aclose()
            await layer.aclose()
    finally:
        redis.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True, help="a BEIR folder (corpus.jsonl)")
    ap.add_argument("--docs", type=int, default=1000)
    asyncio.run(run(ap.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
