"""PII filtering: Presidio pattern recognizers offline, the policies, the service layer."""

import asyncio
import json
import socket
from pathlib import Path

import pytest

from ragserve.config import IngressConfig
from ragserve.schemas import DocumentIn, IngestRequest
from ragserve.security.pii import PII_ENTITIES, PiiConfig, PiiFilter, PiiPolicy
from ragserve.security.pii_service import PiiFilteredService, pii_layer

TEXT = ("Mail jane.doe@example.com or call +1 415-555-0132; card 4111 1111 1111 1111, "
        "IBAN GB82 WEST 1234 5698 7654 32, SSN 536-22-1234, from 192.168.1.20.")
VALUES = ["jane.doe@example.com", "415-555-0132", "4111 1111 1111 1111",
          "GB82 WEST 1234 5698 7654 32", "536-22-1234", "192.168.1.20"]


@pytest.fixture(scope="module")
def pii():
    real = socket.socket.connect

    def no_network(*a, **k):  # tldextract must use its bundled suffix list
        raise AssertionError("PII filtering reached the network")

    socket.socket.connect = no_network
    try:
        f = PiiFilter(hash_key="test-key-0123456789")
        f.detect("x@example.com")  # the e-mail validator's first use loads the suffix list
        yield f
    finally:
        socket.socket.connect = real


def test_each_action(pii):
    redacted = pii.apply(TEXT, PiiPolicy(default="redact"))
    assert not any(v in redacted for v in VALUES)
    for e in PII_ENTITIES:
        assert f"<{e}>" in redacted
    masked = pii.apply(TEXT, PiiPolicy(default="mask"))
    assert "***************1111" in masked and "jane.doe" not in masked
    hashed = pii.apply(TEXT, PiiPolicy(default="hash"))
    assert hashed == pii.apply(TEXT, PiiPolicy(default="hash"))  # deterministic: joinable
    assert "<US_SSN:" in hashed and "536-22-1234" not in hashed
    assert pii.apply(TEXT, PiiPolicy()) == TEXT  # off


def test_per_entity_policy(pii):
    out = pii.apply(TEXT, PiiPolicy(entities={"EMAIL_ADDRESS": "redact", "US_SSN": "mask"}))
    assert "<EMAIL_ADDRESS>" in out and "*******1234" in out
    assert "4111 1111 1111 1111" in out and "192.168.1.20" in out


def test_luhn_and_checksums_decide(pii):
    assert [d.entity_type for d in pii.detect("card 4111 1111 1111 1111")] == ["CREDIT_CARD"]
    assert pii.detect("card 4111 1111 1111 1112") == []
    assert [d.entity_type for d in pii.detect("GB82WEST12345698765432")] == ["IBAN_CODE"]
    assert pii.detect("GB83WEST12345698765432") == []
    assert pii.detect("SSN 000-12-3456") == []


def test_labelled_set_floor(pii):
    rows = [json.loads(line) for line in
            (Path(__file__).parents[1] / "data" / "pii_labelled.jsonl").read_text().splitlines()]
    import sys
    sys.path.insert(0, str(Path(__file__).parents[2]))
    from benchmarks.bench_pii import quality

    q = quality(pii, rows, 0.4)
    for e, m in q.items():
        assert m["recall"] >= 0.95 and m["precision"] >= 0.9, (e, m)


def test_hash_needs_key_and_config_default_off():
    with pytest.raises(ValueError, match="hash_key"):
        PiiConfig(answers=PiiPolicy(default="hash"))
    assert not IngressConfig().pii.enabled
    assert IngressConfig().pii.answers_fingerprint() == ""
    assert PiiConfig(answers=PiiPolicy(default="redact")).answers_fingerprint()
    sentinel = object()
    assert pii_layer(sentinel, PiiConfig()) is sentinel  # off: no layer, no Presidio


class _Inner:
    def __init__(self):
        self.ingested = None

    async def ingest(self, req):
        self.ingested = req
        return "ok"

    async def query(self, req, **kw):
        from types import SimpleNamespace

        resp = SimpleNamespace(answer=f"Write to {VALUES[0]}. Or call +1 415-555-0132.")
        resp.model_copy = lambda update: SimpleNamespace(**{**vars(resp), **update})
        return resp

    async def query_events(self, req, **kw):
        answer = f"Write to {VALUES[0]}. Or call +1 415-555-0132."
        yield "meta", {"citations": []}
        for i in range(0, len(answer), 3):  # tokens that split the entities
            yield "token", {"delta": answer[i:i + 3]}
        yield "done", {"answer": answer}


def test_service_layer_ingest_per_tenant_and_answers(pii):
    from ragserve.security.access import PRINCIPAL, Principal

    cfg = PiiConfig(ingest=PiiPolicy(default="redact"),
                    tenants={"acme": PiiPolicy(entities={"CREDIT_CARD": "mask"})},
                    answers=PiiPolicy(default="redact"))
    inner = _Inner()
    svc = PiiFilteredService(inner, cfg, pii)
    req = IngestRequest(documents=[DocumentIn(id="d", text=TEXT)])

    async def run():
        await svc.ingest(req)
        default_text = inner.ingested.documents[0].text
        token = PRINCIPAL.set(Principal(key_id="k", tenant="acme"))
        try:
            await svc.ingest(req)
        finally:
            PRINCIPAL.reset(token)
        acme_text = inner.ingested.documents[0].text
        resp = await svc.query(None)
        events = [e async for e in svc.query_events(None)]
        return default_text, acme_text, resp, events

    default_text, acme_text, resp, events = asyncio.run(run())
    assert not any(v in default_text for v in VALUES)
    assert "1111 1111 1111 1111" not in acme_text and "jane.doe@example.com" in acme_text
    assert resp.answer == "Write to <EMAIL_ADDRESS>. Or call <PHONE_NUMBER>."
    streamed = "".join(d["delta"] for e, d in events if e == "token")
    assert streamed == resp.answer
    assert events[-1] == ("done", {"answer": resp.answer})
    assert all("jane" not in d.get("delta", "") for _, d in events)


def test_through_the_http_edge_stored_chunks_and_answers_are_filtered(pii):
    """The composition of ``deployments/ingress.py`` without Ray: the layer inside the cache."""
    import httpx

    from ragserve.cache import CacheLayer
    from ragserve.edge import create_app
    from ragserve.pipeline import RAGPipeline, StageSet
    from tests.fakes import FakeEmbedder, FakeGenerator, FakeReranker, MemoryRetriever

    config = IngressConfig.model_validate({"pii": {
        "ingest": {"entities": {"EMAIL_ADDRESS": "redact", "CREDIT_CARD": "mask"}},
        "answers": {"default": "redact"}}})
    stages = StageSet(embedder=FakeEmbedder(), retriever=MemoryRetriever(),
                      reranker=FakeReranker(), generator=FakeGenerator())
    inner = PiiFilteredService(RAGPipeline(stages, config=config), config.pii, pii)
    pipeline = CacheLayer.from_config(config.cache).pipeline(
        inner, fingerprint="t" + config.pii.answers_fingerprint())
    app = create_app(lambda: pipeline)

    async def run():
        await pipeline.startup()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as c:
            r = await c.post("/v1/documents", json={"documents": [
                {"id": "d1", "text": f"Billing contact: {VALUES[0]}, card {VALUES[2]}."}]})
            assert r.status_code == 200, r.text
            return (await c.get("/v1/documents/d1")).json()

    doc = asyncio.run(run())
    text = " ".join(ch["text"] for ch in doc["chunks"])
    assert "<EMAIL_ADDRESS>" in text and "***************1111" in text
    assert VALUES[0] not in text and VALUES[2] not in text
