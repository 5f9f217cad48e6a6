"""The OpenAI-compatible routes, /v1/rerank and /v1/embeddings usage, driven by real clients
(the official ``openai`` SDK, sync, async and streaming, and LangChain's ``ChatOpenAI``) over a
real uvicorn serving the ASGI app on in-process fakes."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from ragserve.edge import Guard
from ragserve.errors import RagServeError
from ragserve.tokens import count_tokens
from tests.fakes import FakeGenerator
from tests.live_app import MODEL, live_fake_app

# The answer, then its numbered sources (OpenAI clients show only the text).
CITED_ANSWER = "answer [1]\n\nSources:\n[1] "
QUESTION = "How often does the espresso machine need descaling?"


@pytest.fixture(scope="module")
def live():
    with live_fake_app() as (url, service):
        yield url, service


@pytest.fixture
def sdk(live):
    url, _ = live
    with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_models_lists_the_app(sdk):
    models = sdk.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert sdk.models.retrieve(MODEL).id == MODEL


def test_chat_completion_answers_with_citations_and_exact_usage(sdk):
    res = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "be brief"},
                               {"role": "user", "content": QUESTION}],
        extra_body={"rerank_top_n": 2})
    assert res.object == "chat.completion" and res.model == MODEL
    choice = res.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.startswith(CITED_ANSWER)
    assert choice.finish_reason == "stop"
    # The fake generator's own count: a 5-token prompt and one token per word.
    assert (res.usage.prompt_tokens, res.usage.completion_tokens, res.usage.total_tokens) == (
        FakeGenerator.PROMPT_TOKENS, 2, FakeGenerator.PROMPT_TOKENS + 2)
    extra = res.model_extra
    cites = extra["citations"]
    assert cites[0]["number"] == 1 and cites[0]["doc_id"] == "notes/coffee.txt"
    assert cites[0]["cited"] is True and "descaling" in cites[0]["text"]
    assert cites[0]["metadata"]["source"] == "notes"
    assert extra["ragserve"]["cited"] == [1]
    assert extra["ragserve"]["backends"]["generator"] == "fake-gen"
    assert extra["ragserve"]["timings"]["total_ms"] > 0


def test_extension_fields_reach_retrieval(sdk):
    res = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}],
        extra_body={"filters": {"source": "guide"}, "top_k": 5, "rerank_top_n": 1,
                    "mode": "dense"})
    assert [c["doc_id"].startswith("guide/") for c in res.model_extra["citations"]] == [True]
    bare = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}],
        extra_body={"return_passages": False})
    assert "citations" not in bare.model_extra and bare.choices[0].message.content


def test_streamed_chat_in_openai_wire_format(live, sdk):
    url, _ = live
    chunks = list(sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].model_extra["citations"][0]["doc_id"] == "notes/coffee.txt"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith(CITED_ANSWER)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 7
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    # On the wire: data lines only, every chunk an object, then [DONE].
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={
            "model": MODEL, "stream": True,
            "messages": [{"role": "user", "content": QUESTION}]}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert all(json.loads(line[6:])["object"] == "chat.completion.chunk" for line in lines[:-1])


async def test_async_sdk_plain_and_streamed(live):
    url, _ = live
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
        res = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": QUESTION}])
        assert res.choices[0].message.content.startswith(CITED_ANSWER)
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": QUESTION}], stream=True)
        parts = [c.choices[0].delta.content async for c in stream if c.choices]
        assert "".join(p or "" for p in parts).startswith(CITED_ANSWER)


def test_messages_drive_retrieval_and_key_the_cache(live, sdk):
    url, _ = live
    follow_up = "and which tablets?"
    alone = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": follow_up}])
    convo = [{"role": "user", "content": QUESTION},
             {"role": "assistant", "content": "Every two weeks [1]."},
             {"role": "user", "content": follow_up}]
    first = sdk.chat.completions.create(model=MODEL, messages=convo)
    again = sdk.chat.completions.create(model=MODEL, messages=convo)
    assert first.model_extra["citations"][0]["doc_id"] == "notes/coffee.txt"
    assert first.model_extra["ragserve"]["cache"]["session_turns"] == 1
    assert alone.model_extra["ragserve"]["cache"]["session_turns"] == 0
    # The earlier turns are part of the query key: same conversation hits, another misses.
    assert first.model_extra["ragserve"]["cache"]["query"] == "miss"
    assert again.model_extra["ragserve"]["cache"]["query"] == "hit"
    other = convo[:1] + [{"role": "assistant", "content": "Never."}] + convo[2:]
    assert sdk.chat.completions.create(model=MODEL, messages=other).model_extra[
        "ragserve"]["cache"]["query"] == "miss"


def test_errors_use_openai_shape_and_statuses(live, sdk):
    url, _ = live
    with pytest.raises(openai.NotFoundError) as nf:
        sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert nf.value.status_code == 404 and nf.value.code == "model_not_found"
    assert "gpt-4o" in nf.value.message and nf.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model=MODEL, messages=[
            {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    assert bad.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "q"}],
                                    extra_body={"top_k": 0})
    assert bad.value.body["param"] == "top_k"
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=MODEL, n=2, messages=[{"role": "user", "content": "q"}])
    # Other routes keep ragserve's own error shape.
    r = httpx.post(f"{url}/v1/query", json={"query": ""})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_generator_down_is_a_503_for_openai_clients():
    with live_fake_app(generator=FakeGenerator(fail=True)) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": QUESTION}])
        assert err.value.status_code == 503
        assert err.value.response.headers["retry-after"] == "1"
        # Streamed, the failure comes after the status: one in-band error, then [DONE].
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={
                "model": MODEL, "stream": True,
                "messages": [{"role": "user", "content": QUESTION}]}) as r:
            lines = [line for line in r.iter_lines() if line]
        assert r.status_code == 200 and lines[-1] == "data: [DONE]"
        assert "error" in json.loads(lines[-2][6:])


def test_the_guard_admits_chat_as_a_query():
    seen = []

    async def check(ctx):
        seen.append((ctx.operation, ctx.credentials))
        if ctx.credentials != "sk-good":
            raise _Unauthorized("a valid API key is required")

    with live_fake_app(guard=Guard([check]), ingest=False) as (url, _):
        bad = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-bad", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            bad.models.list()
        assert err.value.body["type"] == "authentication_error"
        good = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-good", max_retries=0)
        assert good.models.list().data[0].id == MODEL
    assert ("query", "sk-good") in seen


class _Unauthorized(RagServeError):
    status_code = 401
    code = "unauthorized"


def test_langchain_chat_openai_talks_to_ragserve(live):
    from langchain_openai import ChatOpenAI

    url, _ = live
    llm = ChatOpenAI(base_url=f"{url}/v1", api_key="x", model=MODEL, max_retries=0)
    msg = llm.invoke(QUESTION)
    assert msg.content.startswith(CITED_ANSWER)
    assert msg.usage_metadata["total_tokens"] == 7
    streamed = "".join(c.content for c in llm.stream(QUESTION))
    assert streamed.startswith(CITED_ANSWER)


def test_rerank_in_tei_and_cohere_shape(live):
    url, _ = live
    docs = ["Paris is in France.", {"text": "The espresso machine needs descaling.", "id": "e"},
            "Tablets for descaling the espresso machine."]
    r = httpx.post(f"{url}/v1/rerank", json={
        "query": "descaling espresso machine", "documents": docs, "top_n": 2,
        "return_documents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["index"] for x in body["results"]] == [1, 2]
    assert body["results"][0]["document"] == {"text": docs[1]["text"]}
    assert body["results"][0]["relevance_score"] >= body["results"][1]["relevance_score"]
    assert body["model"] == "fake-reranker" and body["degraded"] is False
    q = count_tokens("descaling espresso machine")
    texts = [docs[0], docs[1]["text"], docs[2]]
    assert body["usage"]["total_tokens"] == sum(q + count_tokens(t) for t in texts)
    plain = httpx.post(f"{url}/v1/rerank", json={"query": "paris", "documents": texts}).json()
    assert len(plain["results"]) == 3 and plain["results"][0]["document"] is None
    assert plain["results"][0]["index"] == 0
    bad = httpx.post(f"{url}/v1/rerank", json={"query": "x", "documents": []})
    assert bad.status_code == 422


def test_embeddings_report_tiktoken_usage(live, sdk):
    texts = ["first text", "a second, longer text"]
    res = sdk.embeddings.create(model="fake", input=texts)
    expected = sum(count_tokens(t) for t in texts)
    assert res.usage.prompt_tokens == res.usage.total_tokens == expected > 0
    assert len(res.data) == 2 and len(res.data[0].embedding) == 8
