"""ragserve.integrations.langchain composed in LCEL chains against a real uvicorn serving the
ASGI app on fakes; and the Python client's chat, rerank and models methods. (The same against
the real graph: tests/graphs/test_openai_graph.py.)"""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from ragserve.client import AsyncRagServeClient, RagServeClient
from ragserve.integrations.langchain import (
    RagServeAnswer,
    RagServeEmbeddings,
    RagServeHandleRetriever,
    RagServeRetriever,
)
from tests.live_app import MODEL, live_fake_app

# The answer, then its numbered sources (OpenAI clients show only the text).
CITED_ANSWER = "answer [1]\n\nSources:\n[1] "
QUESTION = "How often does the espresso machine need descaling?"


@pytest.fixture(scope="module")
def url():
    with live_fake_app() as (base_url, _):
        yield base_url


def _format(docs: list[Document]) -> str:
    return "\n".join(f"[{d.metadata['number']}] {d.page_content}" for d in docs)


def test_retriever_returns_documents_with_metadata_and_scores(url):
    retriever = RagServeRetriever(base_url=url, top_k=10, rerank_top_n=2)
    docs = retriever.invoke(QUESTION)
    assert len(docs) == 2 and docs[0].metadata["doc_id"] == "notes/coffee.txt"
    meta = docs[0].metadata
    assert meta["source"] == "notes" and meta["rank"] == 0 and meta["score"] > 0
    assert docs[0].id == meta["chunk_id"]
    filtered = RagServeRetriever(base_url=url, filters={"source": "guide"}, mode="dense")
    assert {d.metadata["source"] for d in filtered.invoke(QUESTION)} == {"guide"}


async def test_retriever_async_and_lcel_chain_with_chat_openai(url):
    from langchain_openai import ChatOpenAI

    retriever = RagServeRetriever(base_url=url, rerank_top_n=2)
    docs = await retriever.ainvoke(QUESTION)
    assert docs[0].metadata["doc_id"] == "notes/coffee.txt"
    prompt = ChatPromptTemplate.from_messages([("user", "{context}\n\nQuestion: {question}")])
    llm = ChatOpenAI(base_url=f"{url}/v1", api_key="x", model=MODEL, max_retries=0)
    chain = ({"context": retriever | _format, "question": RunnablePassthrough()}
             | prompt | llm | StrOutputParser())
    assert chain.invoke(QUESTION).startswith(CITED_ANSWER)
    assert (await chain.ainvoke(QUESTION)).startswith(CITED_ANSWER)


def test_answer_runnable_with_citations_in_a_chain(url):
    answer = RagServeAnswer(base_url=url, rerank_top_n=2)
    out = answer.invoke(QUESTION)
    assert out["answer"] == "answer [1]"
    first = out["citations"][0]
    assert first.metadata["number"] == 1 and first.metadata["cited"] is True
    assert first.metadata["doc_id"] == "notes/coffee.txt"
    chain = RunnableParallel(
        answered=answer | RunnableLambda(lambda o: o["answer"]),
        sources=RagServeRetriever(base_url=url, rerank_top_n=1)
        | RunnableLambda(lambda ds: [d.metadata["doc_id"] for d in ds]))
    assert chain.invoke(QUESTION) == {"answered": "answer [1]", "sources": ["notes/coffee.txt"]}
    overridden = answer.invoke({"question": QUESTION, "filters": {"source": "guide"}})
    assert all(c.metadata["source"] == "guide" for c in overridden["citations"])


async def test_embeddings_in_a_vector_store(url):
    emb = RagServeEmbeddings(base_url=url)
    store = InMemoryVectorStore(emb)
    store.add_texts(["alpha text", "beta text"], metadatas=[{"n": 1}, {"n": 2}])
    assert store.similarity_search("beta text", k=1)[0].metadata["n"] == 2
    vectors = await emb.aembed_documents(["alpha text", "beta text"])
    assert vectors == emb.embed_documents(["alpha text", "beta text"])
    assert len(await emb.aembed_query("q")) == 8


class _Response:
    """What a DeploymentHandle's ``.remote()`` gives: awaitable, or ``.result()``."""

    def __init__(self, value):
        self.value = value

    def result(self, timeout_s=None):
        return self.value

    def __await__(self):
        async def get():
            return self.value
        return get().__await__()


async def test_handle_retriever_over_a_handle_like_object(url):
    calls = []
    with RagServeClient(url) as client:
        class Method:
            def remote(self, request, credentials=None):
                calls.append((request, credentials))
                opts = {k: v for k, v in request.items() if k != "query"}
                return _Response(client.search(request["query"], **opts))

        class Handle:
            search = Method()

        retriever = RagServeHandleRetriever(handle=Handle(), rerank_top_n=1, credentials="k")
        assert retriever.invoke(QUESTION)[0].metadata["doc_id"] == "notes/coffee.txt"
        assert (await retriever.ainvoke(QUESTION))[0].metadata["doc_id"] == "notes/coffee.txt"
    assert calls[0][0]["rerank_top_n"] == 1 and calls[0][1] == "k"


async def test_client_chat_rerank_and_models(url):
    with RagServeClient(url) as client:
        assert client.models()["data"][0]["id"] == MODEL
        res = client.chat([{"role": "user", "content": QUESTION}], rerank_top_n=2)
        assert res["choices"][0]["message"]["content"].startswith(CITED_ANSWER)
        assert res["citations"][0]["doc_id"] == "notes/coffee.txt"
        chunks = list(client.chat_stream([{"role": "user", "content": QUESTION}]))
        assert "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in chunks).startswith(CITED_ANSWER)
        ranked = client.rerank("espresso descaling", ["a cat", "espresso descaling"], top_n=1)
        assert ranked.results[0].index == 1
    async with AsyncRagServeClient(url) as aclient:
        res = await aclient.chat([{"role": "user", "content": QUESTION}], model=MODEL)
        assert res["usage"]["total_tokens"] == 7
        parts = [c async for c in aclient.chat_stream([{"role": "user", "content": QUESTION}])]
        assert parts[-1]["choices"][0]["finish_reason"] == "stop"
        assert (await aclient.rerank("cat", ["a cat", "a dog"])).results[0].index == 0
