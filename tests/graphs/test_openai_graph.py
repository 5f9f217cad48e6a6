"""The OpenAI-compatible chat route, the LangChain integration (HTTP and handle) and the
playground page against the real graph under ``serve.run`` (bundled models, Qdrant local mode)."""

from __future__ import annotations

import httpx
import openai
import pytest
from langchain_core.runnables import RunnableParallel
from ray import serve

from graphs.rag import build_app
from ragserve.integrations.langchain import (
    RagServeAnswer,
    RagServeHandleRetriever,
    RagServeRetriever,
)
from tests.conftest import small_app_args, wait_until_routed
from tests.graphs.answer_checks import assert_local_model_answered_or_was_replaced
from tests.corpus import DOCUMENTS, QUESTIONS

pytestmark = pytest.mark.slow
APP = "openai-graph-test"
PREFIX = "/openaitest"


@pytest.fixture(scope="module")
def graph(serve_instance, tmp_path_factory, model_cache):
    args = small_app_args(tmp_path_factory.mktemp("openai"), model_cache)
    handle = serve.run(build_app(args), name=APP, route_prefix=PREFIX)
    url = serve_instance + PREFIX
    wait_until_routed(url)
    r = httpx.post(f"{url}/v1/documents", json={"documents": DOCUMENTS}, timeout=300)
    assert r.status_code == 200, r.text
    yield handle, url
    serve.delete(APP)


def test_chat_completions_on_the_real_graph(graph):
    _, url = graph
    question, doc_id = QUESTIONS[0]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == [APP]  # the Serve app's name
    res = client.chat.completions.create(
        model=APP, messages=[{"role": "user", "content": question}], max_tokens=16,
        extra_body={"rerank_top_n": 2})
    assert res.choices[0].message.content.strip()
    assert res.choices[0].finish_reason in ("stop", "length")
    assert 0 < res.usage.completion_tokens <= 16
    assert res.usage.total_tokens == res.usage.prompt_tokens + res.usage.completion_tokens
    assert res.model_extra["citations"][0]["doc_id"] == doc_id
    assert_local_model_answered_or_was_replaced(res.model_extra["ragserve"])

    chunks = list(client.chat.completions.create(
        model=APP, messages=[{"role": "user", "content": question}], max_tokens=8,
        stream=True, stream_options={"include_usage": True}))
    assert chunks[0].model_extra["citations"][0]["doc_id"] == doc_id
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert chunks[-1].usage.completion_tokens <= 8
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o",
                                       messages=[{"role": "user", "content": question}])


def test_langchain_over_http_and_handle_on_the_real_graph(graph):
    handle, url = graph
    question, doc_id = QUESTIONS[1]
    chain = RunnableParallel(
        http=RagServeRetriever(base_url=url, rerank_top_n=2),
        handle=RagServeHandleRetriever(handle=handle, rerank_top_n=2),
        answer=RagServeAnswer(base_url=url, rerank_top_n=2, max_tokens=8))
    out = chain.invoke(question)
    assert out["http"][0].metadata["doc_id"] == doc_id
    assert [d.id for d in out["handle"]] == [d.id for d in out["http"]]
    assert out["answer"]["citations"][0].metadata["doc_id"] == doc_id
    assert httpx.get(f"{url}/playground").status_code == 200
