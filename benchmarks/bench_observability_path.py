"""The CPU that metrics and tracing add to one ``/v1/search``, measured on their own code path.

    .venv/bin/python benchmarks/bench_observability_path.py [--requests 4000] [--rounds 5]

``bench_observability.py`` measures the whole graph under load, but on this 2-core machine its
run-to-run spread (±10-15 % between pairs of 5-second loads) is larger than the 5 % it is asked
to resolve. This benchmark takes the other road: it runs, inside one Ray worker, exactly the
observability work a ``/v1/search`` does — the ingress's ``HttpObserver`` (span, counters,
latency histogram), ``ObservedService`` (query hash, stage and result histograms, cache
counters), the stage client's carrier, and the retriever replica's instrumented method (its
server span, attributes, counters, candidates histogram) — around a service that does no work,
with the real ``ray.util.metrics`` objects and the real OpenTelemetry SDK exporting over
OTLP/HTTP to a receiver in this process (the collector's side, not counted). The process's CPU
time (every thread: the span exporter, the metric flusher, Ray's C++ metric threads) over
``--requests`` requests gives microseconds per request for each setting — off, metrics on and
the default sampling, metrics on and every request traced — in interleaved rounds, each in a
fresh worker process, at most ~1,000 requests a second (the span exporter keeps up).

The figure to compare is that cost against a ``/v1/search``'s whole CPU time, which
``bench_observability.py`` prints (CPU/request, 6.7-13 ms on this machine depending on its
speed of the hour).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_observability import (  # noqa: E402
    EXPORT_WAIT_S,
    LABELS,
    _Sink,
    settings,
)
from benchmarks.common import RAY_ENV, free_port  # noqa: E402


def run_path(setting: dict, requests: int) -> dict:
    """Inside a Ray worker: CPU µs per request of the observability path with ``setting``."""
    import asyncio
    import time

    from deployments._client import RetrieverClient
    from deployments._metrics import recorder
    from deployments._observed import instrument, setup_process
    from ragserve.observability import HttpObserver, ObservedService, tracing
    from ragserve.schemas import (
        Citation,
        ScoredChunk,
        SearchRequest,
        SearchResponse,
        StageBackends,
        StageTimings,
    )

    tracing.shutdown_tracing()  # the previous setting's provider, if any
    cfg = setup_process(setting, "ingress")
    chunks = [ScoredChunk(chunk_id=f"c{i}", doc_id=f"d{i}", chunk_index=0, text="x" * 200,
                          score=1.0 - i / 10) for i in range(10)]

    class Retriever:  # the replica's class: the stage's work is not what is measured
        async def search(self, vector, top_k, filters=None, *, query_text=None, mode=None,
                         access=None):
            return chunks[:top_k]

    class Handle:  # delivers a call to the instrumented replica as Serve would
        def __init__(self, replica) -> None:
            self.replica = replica
            self.search = self

        def options(self, **kwargs):
            return self

        async def remote(self, *args, **kwargs):
            return await self.replica.search(*args, **kwargs)

    replica = instrument(Retriever, "retriever")(observability=setting)
    client = RetrieverClient(Handle(replica), "retriever")

    class Service:  # the pipeline, reduced to its one stage call
        async def search(self, req: SearchRequest) -> SearchResponse:
            found = await client.search([0.1] * 384, req.top_k, query_text=req.query)
            return SearchResponse(
                results=[Citation(number=i + 1, doc_id=c.doc_id, chunk_id=c.chunk_id,
                                  text=c.text, score=c.score) for i, c in enumerate(found)],
                timings=StageTimings(embed_ms=0.4, retrieve_ms=3.1, total_ms=4.0),
                backends=StageBackends())

    service: object = Service()
    if cfg.metrics.enabled:
        service = ObservedService(service, recorder(), cfg.metrics)
    observer = HttpObserver(recorder(), cfg.metrics, request_log=False)
    request = SearchRequest(query="how does the embedder batch requests", top_k=10)

    async def one() -> None:
        state = observer.begin("POST", "/v1/search", {})
        try:
            await service.search(request)
        finally:
            observer.end(state, method="POST", path="/v1/search", template="/v1/search",
                         status=200)

    async def loop(n: int) -> None:
        # At most ~1,000 requests a second, a rate the graph's replicas see under load: the
        # span exporter keeps up (faster, its queue would drop spans and hide their cost).
        for i in range(n):
            await one()
            if i % 20 == 19:
                await asyncio.sleep(0.02)

    asyncio.run(loop(200))  # warm: metric objects made, imports done
    time.sleep(EXPORT_WAIT_S)
    cpu0 = time.process_time()
    asyncio.run(loop(requests))
    time.sleep(EXPORT_WAIT_S)  # the span exporter's last batch leaves: its CPU counts
    cpu = time.process_time() - cpu0
    tracing.shutdown_tracing()
    return {"cpu_us": cpu / requests * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--request-cpu-ms", default="6.7,12.9",
                    help="a /v1/search's whole CPU time (bench_observability.py prints it), "
                         "to state the added cost as a share of it")
    args = ap.parse_args()
    whole_ms = [float(x) for x in args.request_cpu_ms.split(",")]

    import ray

    sink = ThreadingHTTPServer(("127.0.0.1", free_port()), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    setups = settings(f"http://127.0.0.1:{sink.server_address[1]}/v1/traces")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, runtime_env=RAY_ENV)
    remote = ray.remote(num_cpus=1, max_calls=1)(run_path)  # a fresh worker each time
    results: dict[str, list[dict]] = {key: [] for key in setups}
    try:
        for r in range(args.rounds):
            keys = list(setups)
            keys = keys[r % 3:] + keys[:r % 3]  # no setting always first
            for key in keys:
                res = ray.get(remote.remote(setups[key], args.requests))
                results[key].append(res)
                print(f"round {r + 1} {LABELS[key]:22s} CPU {res['cpu_us']:7.1f} us/request",
                      flush=True)
            _Sink.bodies = []  # counted, not kept
    finally:
        ray.shutdown()
        sink.shutdown()

    off = statistics.median(x["cpu_us"] for x in results["off"])
    print(f"\nobservability path of one /v1/search, {args.requests} requests x {args.rounds} "
          f"rounds (median CPU per request; {_Sink.received} span exports received)")
    for key, rows in results.items():
        med = statistics.median(x["cpu_us"] for x in rows)
        extra = "" if key == "off" else "  -> adds {:6.1f} us/request: ".format(med - off) + \
            ", ".join(f"{(med - off) / (ms * 10):.2f} % of a {ms:g} ms /v1/search"
                      for ms in whole_ms)
        print(f"{LABELS[key]:22s} {med:7.1f} us/request{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
