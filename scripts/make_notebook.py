"""Writes notebooks/quickstart.ipynb (kept as code so its cells stay reviewable)."""

import nbformat as nbf

cells = [
    nbf.v4.new_markdown_cell(
        "# ragserve quickstart\n\n"
        "Start (or connect to) the RAG application, get a handle to each stage, call each one, "
        "then the whole graph. Everything here uses the same code `serve run` serves.\n\n"
        "* With `RAY_ADDRESS` set (e.g. `auto` next to a running `make serve`), the notebook "
        "connects to that cluster and uses the running `ragserve` app.\n"
        "* Otherwise it starts a local Ray and deploys the embedded default into "
        "`RAGSERVE_DATA_DIR` (default `.ragserve/notebook`)."
    ),
    nbf.v4.new_code_cell(
        "import atexit\n"
        "import os\n"
        "from pathlib import Path\n\n"
        "os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')\n"
        "os.environ.setdefault('RAY_AUTH_MODE', 'disabled')\n"
        "import ray\n"
        "from ray import serve\n\n"
        "from graphs.rag import build_app\n"
        "from scripts.local_ray import export_for_ray, isolated_env, stop_haproxy\n"
        "from ragserve.schemas import GenerationRequest\n\n"
        "APP = 'ragserve'\n"
        "connect = bool(os.environ.get('RAY_ADDRESS'))\n"
        "if connect:\n"
        "    ray.init(address=os.environ['RAY_ADDRESS'])\n"
        "    app = serve.get_app_handle(APP)\n"
        "else:\n"
        "    data = Path(os.environ.get('RAGSERVE_DATA_DIR', '.ragserve/notebook'))\n"
        "    # The local Ray runs as `make serve` runs it, with HAProxy in a folder and on ports of its\n"
        "    # own (stopped when the kernel exits).\n"
        "    serve_env = isolated_env()\n"
        "    atexit.register(stop_haproxy, serve_env)\n"
        "    export_for_ray(serve_env)\n"
        "    ray.init(address='local', include_dashboard=False, log_to_driver=False,\n"
        "             runtime_env={'env_vars': {'HF_HUB_OFFLINE': '1', 'HF_HUB_DISABLE_PROGRESS_BARS': '1'}})\n"
        "    serve.start(http_options={'host': '127.0.0.1', 'port': int(os.environ.get('RAGSERVE_PORT', '8123'))})\n"
        "    args = {\n"
        "        'retriever': {'config': {'path': str(data / 'qdrant'), 'collection': 'notebook'}},\n"
        "        'generator': {'config': {'default_max_tokens': 48,\n"
        "                                 'backend': {'backend': 'local', 'cache_dir': os.environ.get('RAGSERVE_MODEL_CACHE', '.ragserve/models')}}},\n"
        "    }\n"
        "    app = serve.run(build_app(args), name=APP, route_prefix='/')\n"
        "print('app handle:', app)"
    ),
    nbf.v4.new_markdown_cell("## A handle per stage\nEach stage is its own deployment; `get_deployment_handle` reaches it directly."),
    nbf.v4.new_code_cell(
        "embedder = serve.get_deployment_handle('Embedder', app_name=APP)\n"
        "retriever = serve.get_deployment_handle('Retriever', app_name=APP)\n"
        "reranker = serve.get_deployment_handle('Reranker', app_name=APP)\n"
        "generator = serve.get_deployment_handle('Generator', app_name=APP)\n\n"
        "vectors = await embedder.embed.remote(['Ray Serve scales each stage on its own.', 'Qdrant stores vectors.'], 'passage')\n"
        "info = await embedder.info.remote()\n"
        "print(info)\n"
        "print(len(vectors), 'vectors of dimension', len(vectors[0]))"
    ),
    nbf.v4.new_markdown_cell("## Ingest a few documents through the application handle"),
    nbf.v4.new_code_cell(
        "docs = [\n"
        "    {'id': 'notes/batching', 'content_type': 'technical', 'metadata': {'source': 'notebook'},\n"
        "     'text': 'The embedder batches concurrent requests with serve.batch; max_batch_size caps a batch.'},\n"
        "    {'id': 'notes/storage', 'content_type': 'technical', 'metadata': {'source': 'notebook'},\n"
        "     'text': 'Qdrant local mode keeps vectors in a folder on disk; a server URL lets the retriever scale.'},\n"
        "    {'id': 'notes/coffee', 'content_type': 'general', 'metadata': {'source': 'notebook'},\n"
        "     'text': 'The espresso machine needs descaling every two weeks.'},\n"
        "]\n"
        "ingested = await app.ingest.remote({'documents': docs})\n"
        "[(d.id, d.status, d.chunks) for d in ingested.documents]"
    ),
    nbf.v4.new_markdown_cell("## Search, rerank and generate, stage by stage"),
    nbf.v4.new_code_cell(
        "question = 'Where does local mode keep the vectors?'\n"
        "qvec = (await embedder.embed.remote([question], 'query'))[0]\n"
        "candidates = await retriever.search.remote(qvec, 10)\n"
        "print('retrieved:', [(c.doc_id, round(c.score, 3)) for c in candidates])\n"
        "reranked = await reranker.rerank.remote(question, candidates, 2)\n"
        "print('reranked by', reranked.backend, [(c.doc_id, round(c.score, 3)) for c in reranked.chunks])\n"
        "answer = await generator.generate.remote(GenerationRequest(query=question, passages=reranked.chunks, max_tokens=48))\n"
        "print(answer.backend, answer.usage)\n"
        "print(answer.text)\n"
        "assert reranked.chunks[0].doc_id == 'notes/storage'"
    ),
    nbf.v4.new_markdown_cell("## The whole graph in one call"),
    nbf.v4.new_code_cell(
        "res = await app.query.remote({'query': 'How often must the espresso machine be descaled?', 'rerank_top_n': 2})\n"
        "print(res.answer)\n"
        "for c in res.citations:\n"
        "    print(f'[{c.number}] {c.doc_id} score={c.score:.3f} cited={c.cited}')\n"
        "print(res.timings)\n"
        "assert res.citations[0].doc_id == 'notes/coffee'"
    ),
    nbf.v4.new_markdown_cell(
        "## The same service over HTTP: the Python client, the OpenAI SDK, LangChain\n"
        "`ragserve.client` speaks every route; `/v1/chat/completions` answers any OpenAI client "
        "(citations in the extra `citations` field); `ragserve.integrations.langchain` gives a "
        "retriever over HTTP or over the handle above."),
    nbf.v4.new_code_cell(
        "import openai\n"
        "from ragserve.client import RagServeClient\n"
        "from ragserve.integrations.langchain import RagServeHandleRetriever, RagServeRetriever\n\n"
        "url = os.environ.get('RAGSERVE_URL') or (\n"
        "    'http://127.0.0.1:8000' if connect else f\"http://127.0.0.1:{os.environ.get('RAGSERVE_PORT', '8123')}\")\n"
        "with RagServeClient(url) as client:\n"
        "    hits = client.search('Where does local mode keep the vectors?', rerank_top_n=2)\n"
        "    print('client:', [h.doc_id for h in hits.results])\n"
        "    print('rerank:', [(r.index, r.relevance_score) for r in client.rerank(\n"
        "        'descaling', ['Qdrant stores vectors.', 'Descale the espresso machine.']).results])\n\n"
        "sdk = openai.OpenAI(base_url=f'{url}/v1', api_key='unused')\n"
        "chat = sdk.chat.completions.create(\n"
        "    model=APP, max_tokens=24, extra_body={'rerank_top_n': 2},\n"
        "    messages=[{'role': 'user', 'content': 'How often must the espresso machine be descaled?'}])\n"
        "print('openai:', chat.choices[0].message.content, chat.usage)\n"
        "print('cited passages:', [c['doc_id'] for c in chat.model_extra['citations']])\n\n"
        "docs = RagServeRetriever(base_url=url, rerank_top_n=2).invoke('Where does local mode keep the vectors?')\n"
        "via_handle = await RagServeHandleRetriever(handle=app, rerank_top_n=2).ainvoke('Where does local mode keep the vectors?')\n"
        "print('langchain:', [(d.metadata['doc_id'], round(d.metadata['score'], 3)) for d in docs])\n"
        "assert docs[0].metadata['doc_id'] == via_handle[0].metadata['doc_id'] == 'notes/storage'\n"
        "assert chat.model_extra['citations'][0]['doc_id'] == 'notes/coffee'"
    ),
    nbf.v4.new_code_cell(
        "if not connect:\n"
        "    serve.shutdown()\n"
        "    ray.shutdown()"
    ),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
})
nbf.write(nb, "notebooks/quickstart.ipynb")
print("wrote notebooks/quickstart.ipynb")
