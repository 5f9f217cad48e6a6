"""Generator backends against real parts: the extractive answerer, the OpenAI-compatible client
against a real HTTP server started here, and the bundled SmolLM2 run by transformers, by
CTranslate2 and by llama.cpp."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ragserve.config import (
    ExtractiveGeneratorConfig,
    GeneratorConfig,
    LocalGeneratorConfig,
    OpenAIGeneratorConfig,
)
from ragserve.errors import InvalidRequestError, StageTimeoutError, StageUnavailableError
from ragserve.generation import (
    CTranslate2Generator,
    ExtractiveGenerator,
    Generator,
    LlamaCppGenerator,
    OpenAICompatibleGenerator,
    TransformersGenerator,
    build_generator,
)
from ragserve.generation.ctranslate2 import ctranslate2_model_dir
from ragserve.generation.extractive import NO_PASSAGES_ANSWER
from ragserve.generation.llamacpp import requantized_dir, tokenizer_cache_dir
from ragserve.generation.local import LocalChatGenerator, converted_model_dir
from ragserve.models import resolve_model
from ragserve.schemas import GenerationRequest, ScoredChunk
from ragserve.tokens import count_tokens


def chunk(i: int, text: str, score: float) -> ScoredChunk:
    return ScoredChunk(chunk_id=f"c{i}", doc_id=f"d{i}", chunk_index=0, text=text, score=score)


PASSAGES = [
    chunk(1, "The Eiffel Tower is in Paris. It was completed in 1889 for the World's Fair.", 0.9),
    chunk(2, "Mount Fuji is the highest mountain in Japan. It last erupted in 1707.", 0.6),
    chunk(3, "The Great Wall of China is thousands of kilometres long.", 0.3),
]


def test_every_backend_satisfies_the_protocol_and_the_factory_picks_it():
    cases = [
        (GeneratorConfig(backend=ExtractiveGeneratorConfig()), ExtractiveGenerator, "extractive"),
        (GeneratorConfig(backend=OpenAIGeneratorConfig(base_url="http://127.0.0.1:9/v1",
                                                       model="m")),
         OpenAICompatibleGenerator, "openai:m"),
        (GeneratorConfig(backend=LocalGeneratorConfig(model="some/model",
                                                      engine="transformers")),
         TransformersGenerator, "local:some/model"),
        (GeneratorConfig(backend=LocalGeneratorConfig(model="some/model",
                                                      engine="ctranslate2")),
         CTranslate2Generator, "local:some/model"),
        (GeneratorConfig(backend=LocalGeneratorConfig(model="some/model", engine="llamacpp")),
         LlamaCppGenerator, "local:some/model"),
    ]
    for cfg, cls, name in cases:
        gen = build_generator(cfg)
        assert isinstance(gen, cls) and isinstance(gen, Generator) and gen.name == name


# ---------------------------------------------------------------------------- extractive


async def test_extractive_cites_the_passage_with_the_answer():
    gen = ExtractiveGenerator(ExtractiveGeneratorConfig(max_sentences=1))
    gen.warm_up()
    req = GenerationRequest(query="When did the volcano last erupt?", passages=PASSAGES)
    res = await gen.generate(req)
    assert res.text == "It last erupted in 1707. [2]"  # "erupt" matches "erupted"
    assert res.cited == [2] and res.passages_used == 3 and res.backend == "extractive"
    assert res.usage.completion_tokens == count_tokens(res.text)
    assert res.usage.prompt_tokens == gen.plan(req).prompt_tokens > 0
    items = [i async for i in gen.stream(req)]
    assert "".join(i["delta"] for i in items[:-1]) == items[-1]["result"].text == res.text


async def test_extractive_groups_sentences_of_one_passage_under_one_marker():
    gen = ExtractiveGenerator(ExtractiveGeneratorConfig())
    res = await gen.generate(GenerationRequest(query="When did Mount Fuji last erupt?",
                                               passages=PASSAGES))
    assert res.text == "Mount Fuji is the highest mountain in Japan. It last erupted in 1707. [2]"
    assert res.cited == [2]


async def test_extractive_orders_by_passage_and_respects_max_tokens():
    gen = ExtractiveGenerator(ExtractiveGeneratorConfig(max_sentences=3))
    req = GenerationRequest(query="Where is the tower and how high is the mountain in Japan?",
                            passages=PASSAGES)
    res = await gen.generate(req)
    assert res.text.index("[1]") < res.text.index("[2]")
    assert res.cited[:2] == [1, 2]
    short = await gen.generate(req.model_copy(update={"max_tokens": 6}))
    assert short.usage.completion_tokens <= 6 and short.finish_reason == "length"
    # no whole sentence fits: the best one (the mountain, the most words shared) is cut
    assert short.cited == [2] and short.text.startswith("Mount Fuji")


async def test_extractive_without_overlap_or_passages():
    gen = ExtractiveGenerator(ExtractiveGeneratorConfig())
    # passages that share no word with the question answer nothing: "I don't know", uncited
    res = await gen.generate(GenerationRequest(query="zebra quantum?", passages=PASSAGES))
    assert res.text == NO_PASSAGES_ANSWER and res.cited == [] and res.passages_used == 3
    empty = await gen.generate(GenerationRequest(query="anything?", passages=[]))
    assert empty.text == NO_PASSAGES_ANSWER and empty.cited == [] and empty.passages_used == 0


# ---------------------------------------------------------------------------- OpenAI stub

ANSWER = "The Eiffel Tower is in Paris [1]."


def _stub_app(seen: list[dict]) -> FastAPI:
    """/v1/chat/completions whose behaviour is chosen by the requested model name."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        seen.append({"headers": dict(request.headers), "body": body})
        model = body["model"]
        if model == "fail-500":
            return JSONResponse({"error": {"message": "engine crashed"}}, status_code=500)
        if model == "busy-429":
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429,
                                headers={"Retry-After": "7"})
        if model == "bad-400":
            return JSONResponse({"error": {"message": "model 'bad-400' does not exist"}},
                                status_code=400)
        if model == "hang":
            await asyncio.sleep(3)
        usage = {"prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51}
        if not body.get("stream"):
            payload = {"id": "x", "object": "chat.completion", "model": model,
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": ANSWER}}]}
            if model != "no-usage":
                payload["usage"] = usage
            return payload

        async def events():
            words = ANSWER.split(" ")
            for i, word in enumerate(words):
                delta = {"content": word if i == 0 else " " + word}
                if i == 0:
                    delta["role"] = "assistant"
                yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta}]})}\n\n"
                if model == "hang-mid-stream" and i == 1:
                    await asyncio.sleep(3)
            yield ('data: ' + json.dumps({"choices": [{"index": 0, "delta": {},
                                                      "finish_reason": "stop"}]}) + "\n\n")
            if (body.get("stream_options") or {}).get("include_usage"):
                yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stub_server():
    """A real uvicorn server on a free loopback port, in a background thread."""
    seen: list[dict] = []
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(_stub_app(seen), host="127.0.0.1", port=port,
                                           log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "stub server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", seen
    server.should_exit = True
    thread.join(timeout=10)


def openai_gen(base_url: str, model: str = "stub-model", **kw) -> OpenAICompatibleGenerator:
    limits = {k: kw.pop(k) for k in ("default_max_tokens", "max_tokens_cap") if k in kw}
    gen = OpenAICompatibleGenerator(GeneratorConfig(
        backend=OpenAIGeneratorConfig(base_url=base_url, model=model, **kw), **limits))
    gen.warm_up()
    return gen


REQ = GenerationRequest(query="Where is the Eiffel Tower?", passages=PASSAGES, max_tokens=5000)


async def test_openai_request_shape_and_parsing(stub_server):
    base_url, seen = stub_server
    gen = openai_gen(base_url, api_key={"value": "sk-test"}, default_max_tokens=100, max_tokens_cap=200,
                     temperature=0.2)
    try:
        res = await gen.generate(REQ)
    finally:
        await gen.aclose()
    sent = seen[-1]
    assert sent["headers"]["authorization"] == "Bearer sk-test"
    body = sent["body"]
    assert body["model"] == "stub-model" and body["max_tokens"] == 200
    assert body["stream"] is False and body["temperature"] == 0.2
    assert body["messages"][0]["role"] == "system"
    assert "[1] The Eiffel Tower is in Paris." in body["messages"][-1]["content"]
    assert res.text == ANSWER and res.cited == [1] and res.backend == "openai:stub-model"
    assert (res.usage.prompt_tokens, res.usage.completion_tokens) == (42, 9)
    assert res.passages_used == 3


async def test_openai_usage_falls_back_to_tiktoken(stub_server):
    base_url, seen = stub_server
    gen = openai_gen(base_url, model="no-usage")
    res = await gen.generate(REQ)
    assert "authorization" not in seen[-1]["headers"]
    assert res.usage.completion_tokens == count_tokens(ANSWER)
    assert res.usage.prompt_tokens == gen.plan(REQ).prompt_tokens
    await gen.aclose()


async def test_openai_stream_deltas_join_to_the_text(stub_server):
    base_url, seen = stub_server
    gen = openai_gen(base_url)
    items = [i async for i in gen.stream(REQ)]
    await gen.aclose()
    deltas = [i["delta"] for i in items[:-1]]
    result = items[-1]["result"]
    assert len(deltas) == len(ANSWER.split(" ")) and "".join(deltas) == result.text == ANSWER
    assert result.usage.total_tokens == 51 and result.cited == [1]
    body = seen[-1]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("model, status", [("fail-500", 500), ("busy-429", 429), ("bad-400", 400)])
async def test_openai_http_errors_are_unavailable(stub_server, model, status):
    base_url, _ = stub_server
    gen = openai_gen(base_url, model=model)
    with pytest.raises(StageUnavailableError) as err:
        await gen.generate(REQ)
    assert not isinstance(err.value, StageTimeoutError)
    assert err.value.details["status"] == status
    if status == 429:
        assert err.value.details["retry_after"] == "7"
    if status == 400:
        assert "does not exist" in err.value.message
    with pytest.raises(StageUnavailableError):  # the same through the stream
        async for _ in gen.stream(REQ):
            pass
    await gen.aclose()


async def test_openai_hang_is_a_timeout(stub_server):
    base_url, _ = stub_server
    gen = openai_gen(base_url, model="hang", timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(StageTimeoutError):
        await gen.generate(REQ)
    assert time.monotonic() - start < 2.0
    stalled = openai_gen(base_url, model="hang-mid-stream", timeout_s=0.3)
    got = []
    with pytest.raises(StageTimeoutError):
        async for item in stalled.stream(REQ):
            got.append(item)
    assert [i["delta"] for i in got] == ["The", " Eiffel"]  # deltas before the stall arrived
    await gen.aclose()
    await stalled.aclose()


async def test_openai_connection_refused_is_unavailable():
    gen = openai_gen(f"http://127.0.0.1:{_free_port()}/v1")
    with pytest.raises(StageUnavailableError) as err:
        await gen.generate(REQ)
    assert not isinstance(err.value, StageTimeoutError) and err.value.details["error"]
    await gen.aclose()


# ---------------------------------------------------------------------------- local SmolLM2


@pytest.fixture(scope="module")
def generator_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("generator-cache")


def _loaded(cls, engine: str, cache, what: str):
    """SmolLM2 run by ``engine`` with the module-private cache, loaded (timed) once."""
    config = GeneratorConfig(
        backend=LocalGeneratorConfig(cache_dir=str(cache), torch_threads=2, engine=engine),
        default_max_tokens=16, max_tokens_cap=256,
    )
    gen = cls(config)
    start = time.perf_counter()
    gen.warm_up()
    print(f"\nSmolLM2 {what}: {time.perf_counter() - start:.1f}s")
    return gen, config, cache


@pytest.fixture(scope="module")
def local_gen(generator_cache):
    """SmolLM2 converted once from its GGUF into a module-private cache."""
    return _loaded(TransformersGenerator, "transformers", generator_cache, "GGUF load + convert")


@pytest.mark.slow
def test_local_converts_once_then_loads_the_cache(local_gen):
    gen, config, cache = local_gen
    first = gen.health()
    assert first["source"] == "gguf" and first["loaded_from"].endswith(".gguf")
    folder = cache / first["converted_path"].rsplit("/", 1)[-1]
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
    # no half-written temp folder (the CTranslate2 copy may sit beside it)
    assert [p.name for p in cache.iterdir() if "-ct2-" not in p.name] == [folder.name]
    again = TransformersGenerator(config)
    start = time.perf_counter()
    again.warm_up()
    print(f"SmolLM2 load from converted cache: {time.perf_counter() - start:.1f}s")
    health = again.health()
    assert health["source"] == "cache" and health["loaded_from"] == str(folder)
    assert health["device"] == "cpu" and health["dtype"] == "float32"
    assert again.count_tokens("Paris is in France.") == gen.count_tokens("Paris is in France.")


@pytest.mark.slow
def test_converted_copy_is_written_atomically(local_gen, tmp_path):
    gen, config, _ = local_gen
    resolved = resolve_model(config.backend.model, config.backend.gguf_file)
    target = converted_model_dir(tmp_path / "cache", resolved)
    gen._save_converted(gen._model, gen._tokenizer, target, resolved)
    assert (target / "model.safetensors").is_file()
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    before = (target / "model.safetensors").stat().st_mtime_ns
    # a second writer (another replica) loses the rename race: the first copy stays intact
    gen._save_converted(gen._model, gen._tokenizer, target, resolved)
    assert (target / "model.safetensors").stat().st_mtime_ns == before
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    # an unwritable cache is skipped, not fatal
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    gen._save_converted(gen._model, gen._tokenizer, blocker / "sub" / "m", resolved)
    assert blocker.is_file()


LOCAL_REQ = GenerationRequest(
    query="What is the capital of France?",
    passages=[chunk(1, "Paris is the capital of France.", 0.9),
              chunk(2, "Berlin is the capital of Germany.", 0.5)],
    max_tokens=16,
)


@pytest.fixture(scope="module")
def ct2_gen(local_gen, generator_cache):
    """SmolLM2 in CTranslate2 int8, converted from the transformers copy ``local_gen`` made."""
    return _loaded(CTranslate2Generator, "ctranslate2", generator_cache,
                   "safetensors -> CTranslate2 int8 + load")


@pytest.fixture(scope="module")
def llama_gen(generator_cache):
    """SmolLM2's GGUF in llama.cpp: requantized to Q8_0 and its tokenizer cached, once."""
    return _loaded(LlamaCppGenerator, "llamacpp", generator_cache,
                   "GGUF -> llama.cpp Q8_0 + tokenizer + load")


@pytest.fixture(scope="module", params=["transformers", "ctranslate2", "llamacpp"])
def engine_gen(request) -> LocalChatGenerator:
    """Each local engine, loaded once for the module."""
    fixture = {"transformers": "local_gen", "ctranslate2": "ct2_gen",
               "llamacpp": "llama_gen"}[request.param]
    return request.getfixturevalue(fixture)[0]


@pytest.mark.slow
def test_ctranslate2_converts_once_then_loads_the_cache(ct2_gen, local_gen):
    gen, config, cache = ct2_gen
    first = gen.health()
    assert first["engine"] == "ctranslate2" and first["source"] == "converted"
    assert first["device"] == "cpu" and first["dtype"] == "int8_float32"  # int8 weights
    resolved = resolve_model(config.backend.model, config.backend.gguf_file)
    folder = ctranslate2_model_dir(str(cache), resolved, "int8")
    assert first["loaded_from"] == str(folder) and (folder / "model.bin").is_file()
    assert (folder / "tokenizer" / "tokenizer.json").is_file()
    # beside the transformers copy it was converted from; no temporary folder left behind
    names = {p.name for p in cache.iterdir()}
    assert {folder.name, converted_model_dir(cache, resolved).name} <= names
    assert not [n for n in names if n.startswith(".")]
    again = CTranslate2Generator(config)
    start = time.perf_counter()
    again.warm_up()
    print(f"SmolLM2 CTranslate2 load from cache: {time.perf_counter() - start:.2f}s")
    assert again.health()["source"] == "cache" and again.health()["loaded_from"] == str(folder)
    text = "Paris is in France, isn't it?"
    assert again.count_tokens(text) == local_gen[0].count_tokens(text)
    assert gen.plan(LOCAL_REQ).messages == local_gen[0].plan(LOCAL_REQ).messages
    # another compute type is another copy, keyed apart
    assert ctranslate2_model_dir(str(cache), resolved, "float32") != folder


@pytest.mark.slow
async def test_ctranslate2_reads_the_same_prompt_and_answers_from_it(ct2_gen, local_gen):
    """Same template, same prompt tokens; int8 is not float32 token for token (greedy answers
    may part at the first token: docs/benchmarks/generation-cpu.md), but both answer."""
    ct2, hf = ct2_gen[0], local_gen[0]
    a, b = await ct2.generate(LOCAL_REQ), await hf.generate(LOCAL_REQ)
    assert a.usage.prompt_tokens == b.usage.prompt_tokens
    assert "Paris" in a.text and "Paris" in b.text, (a.text, b.text)


@pytest.mark.slow
async def test_ctranslate2_float32_says_what_transformers_says(local_gen, generator_cache):
    """Without a repetition penalty (whose scope differs: transformers penalises the prompt's
    tokens too, CTranslate2 only the answer's), CTranslate2 in float32 gives transformers'
    greedy answer token for token: same template, prompt ids, end token and counts."""

    def config(engine: str, **kw) -> GeneratorConfig:
        return GeneratorConfig(
            backend=LocalGeneratorConfig(cache_dir=str(generator_cache), torch_threads=2,
                                         engine=engine, repetition_penalty=1.0, **kw),
            default_max_tokens=16, max_tokens_cap=256)

    hf = TransformersGenerator(config("transformers"))
    ct2 = CTranslate2Generator(config("ctranslate2", compute_type="float32"))
    hf.warm_up()
    ct2.warm_up()
    assert ct2.health()["dtype"] == "float32"
    req = LOCAL_REQ.model_copy(update={"max_tokens": 24})
    a, b = await hf.generate(req), await ct2.generate(req)
    assert (b.text, b.usage, b.finish_reason) == (a.text, a.usage, a.finish_reason)


@pytest.mark.slow
async def test_llamacpp_requantizes_the_gguf_once_and_keeps_the_tokenizer(llama_gen, local_gen):
    gen, config, cache = llama_gen
    first = gen.health()
    resolved = resolve_model(config.backend.model, config.backend.gguf_file)
    assert first["engine"] == "llamacpp" and first["device"] == "cpu"
    assert first["source"] == "gguf"  # a fresh cache: tokenizer and weights read from the file
    # Q8_0 by default, requantized once from the bundled Q4_1 into the cache
    folder = requantized_dir(str(cache), resolved, "Q8_0")
    assert first["dtype"] == "Q8_0" and first["loaded_from"] == str(folder / "model.gguf")
    assert json.loads((folder / "ragserve-source.json").read_text())["weights"] == "Q8_0"
    tokenizer = tokenizer_cache_dir(str(cache), resolved)
    assert (tokenizer / "tokenizer.json").is_file()
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".")]  # no temp folders
    again = LlamaCppGenerator(config)
    start = time.perf_counter()
    again.warm_up()
    print(f"SmolLM2 llama.cpp load from the cache: {time.perf_counter() - start:.2f}s")
    assert again.health()["source"] == "cache"
    assert again.health()["loaded_from"] == first["loaded_from"]
    # the same chat template, prompt and token counts as the transformers engine
    text = "Paris is in France, isn't it?"
    assert again.count_tokens(text) == local_gen[0].count_tokens(text)
    assert again.plan(LOCAL_REQ).messages == local_gen[0].plan(LOCAL_REQ).messages
    res = await again.generate(LOCAL_REQ)
    assert "Paris" in res.text, res.text
    assert res.usage.prompt_tokens == (await local_gen[0].generate(LOCAL_REQ)).usage.prompt_tokens
    # `file` runs the checkpoint's own Q4_1 weights, no copy
    as_is = LlamaCppGenerator(config.backend.model_copy(update={"gguf_weights": "file"}))
    as_is.warm_up()
    assert as_is.health()["dtype"] == "Q4_1"
    assert as_is.health()["loaded_from"] == str(Path(resolved.path) / resolved.gguf_file)
    assert "Paris" in (await as_is.generate(LOCAL_REQ)).text


def test_llamacpp_refuses_a_model_that_is_not_gguf(tmp_path):
    """llama.cpp reads GGUF files only: a transformers folder is a clear start-up error (the
    chain's fallbacks answer), not a crash inside llama.cpp."""
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    gen = LlamaCppGenerator(LocalGeneratorConfig(model=str(folder), engine="llamacpp"))
    with pytest.raises(RuntimeError, match="GGUF"):
        gen.warm_up()


@pytest.mark.slow
async def test_local_generate_reports_exact_usage(engine_gen):
    gen = engine_gen
    tok = gen._tokenizer
    start = time.perf_counter()
    res = await gen.generate(LOCAL_REQ)
    elapsed = time.perf_counter() - start
    print(f"SmolLM2 generate: {res.usage.completion_tokens} tokens in {elapsed:.2f}s "
          f"({res.usage.completion_tokens / elapsed:.1f} tokens/s incl. prefill)")
    assert res.text.strip() and res.backend == "local:HuggingFaceTB/SmolLM2-135M-Instruct"
    assert gen.health()["engine"] == gen.engine
    plan = gen.plan(LOCAL_REQ)
    prompt_ids = tok.apply_chat_template(plan.messages, add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"]
    assert res.usage.prompt_tokens == len(prompt_ids)
    assert abs(plan.prompt_tokens - len(prompt_ids)) <= 3  # the budget's estimate is close
    assert 1 <= res.usage.completion_tokens <= 16
    assert res.usage.total_tokens == res.usage.prompt_tokens + res.usage.completion_tokens
    # the completion re-encodes to its token count (+1 for the end-of-turn token on "stop")
    eos = 1 if res.finish_reason == "stop" else 0
    assert abs(len(tok.encode(res.text, add_special_tokens=False)) + eos
               - res.usage.completion_tokens) <= 1
    assert res.passages_used == 2 and res.finish_reason in {"stop", "length"}


@pytest.mark.slow
async def test_local_stream_matches_generate(engine_gen):
    gen = engine_gen
    items = [i async for i in gen.stream(LOCAL_REQ)]
    deltas = [i["delta"] for i in items[:-1]]
    result = items[-1]["result"]
    assert len(deltas) >= 2 and "".join(deltas) == result.text
    assert result.text == (await gen.generate(LOCAL_REQ)).text  # greedy: same answer


LONG_REQ = GenerationRequest(
    query="Write a long, detailed essay about the history of Paris, century by century.",
    passages=[chunk(1, "Paris is the capital of France.", 0.9)],
    max_tokens=256,
)


async def _wait_idle(gen: LocalChatGenerator, timeout_s: float = 5.0) -> float:
    start = time.monotonic()
    while gen.busy:
        assert time.monotonic() - start < timeout_s, "generation kept running"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@pytest.mark.slow
async def test_local_stream_closed_early_stops_generation(engine_gen):
    gen = engine_gen
    cancelled = gen.health()["cancelled"]
    stream = gen.stream(LONG_REQ)
    got = [await stream.__anext__() for _ in range(3)]
    assert all("delta" in g for g in got) and gen.busy
    await stream.aclose()
    waited = await _wait_idle(gen)
    assert gen.health()["cancelled"] == cancelled + 1  # it stopped, it did not run to the end
    print(f"stream closed: generation stopped {waited:.2f}s later")


@pytest.mark.slow
async def test_local_cancelled_generate_stops_generation(engine_gen):
    gen = engine_gen
    cancelled = gen.health()["cancelled"]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(gen.generate(LONG_REQ), timeout=0.5)
    await _wait_idle(gen)
    assert gen.health()["cancelled"] == cancelled + 1


@pytest.mark.slow
async def test_local_refuses_a_question_longer_than_the_window(engine_gen):
    gen = engine_gen
    huge = GenerationRequest(query="word " * 3000, passages=[])
    with pytest.raises(InvalidRequestError):
        await gen.generate(huge)
