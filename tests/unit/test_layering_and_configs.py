"""Every shipped config is valid (the import rules between layers: test_layering.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from graphs.args import RagAppArgs

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert {p.name for p in CONFIGS} >= {"local.yaml", "gpu.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_parses_into_the_args_model(path):
    doc = yaml.safe_load(path.read_text())
    apps = doc["applications"]
    assert apps
    for app in apps:
        assert app["import_path"] in ("graphs.rag:build_app", "graphs.rag:build_search_app")
        args = RagAppArgs.model_validate(app.get("args") or {})
        for stage in (args.embedder, args.reranker):
            mor = stage.deployment.max_ongoing_requests
            assert mor is None or mor >= stage.config.batching.max_batch_size, path.name


def test_local_config_fits_two_cores_at_max_scale():
    doc = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())
    args = RagAppArgs.model_validate(doc["applications"][0]["args"])
    total = 0.0
    for stage in (args.embedder, args.retriever, args.reranker, args.generator, args.ingress):
        cpus = (stage.deployment.ray_actor_options.num_cpus or 1.0) if stage.deployment.ray_actor_options else 1.0
        total += cpus * stage.deployment.max_replicas()
    assert total <= 2.0


def test_local_qdrant_cannot_be_scaled_out():
    with pytest.raises(ValueError, match="one replica"):
        RagAppArgs.model_validate({"retriever": {"deployment": {"num_replicas": 2}}})
    # with a server URL it can
    RagAppArgs.model_validate({"retriever": {"config": {"url": "http://qdrant:6333"},
                                             "deployment": {"num_replicas": 2}}})


def test_typos_in_args_are_rejected():
    with pytest.raises(ValueError):
        RagAppArgs.model_validate({"embedder": {"config": {"modle": "x"}}})
    with pytest.raises(ValueError):
        RagAppArgs.model_validate({"embedder": {"deployment": {"num_replicas": 1,
                                                               "autoscaling_config": {}}}})


def test_secrets_are_masked_in_dumps():
    args = RagAppArgs.model_validate({"retriever": {"config": {"url": "http://q:6333", "api_key": {"value": "s3cret"}}}})
    assert "s3cret" not in args.model_dump_json()
    assert args.retriever.config.api_key.resolve() == "s3cret"


def test_upstream_api_keys_come_from_secret_references_and_a_missing_one_fails_the_load(
        monkeypatch, tmp_path):
    import pytest

    from ragserve.config import GeneratorConfig
    from ragserve.errors import ConfigurationError
    from ragserve.generation.openai_compat import OpenAICompatibleGenerator

    secret = tmp_path / "llm-key"
    secret.write_text("sk-from-file\n")
    ok = OpenAICompatibleGenerator(GeneratorConfig.model_validate({"backend": {
        "backend": "openai", "base_url": "http://llm:8000/v1", "model": "m",
        "api_key": {"file": str(secret)}}}))
    ok.warm_up()
    assert ok._api_key() == "sk-from-file"
    monkeypatch.delenv("RAGSERVE_TEST_LLM_KEY", raising=False)
    missing = OpenAICompatibleGenerator(GeneratorConfig.model_validate({"backend": {
        "backend": "openai", "base_url": "http://llm:8000/v1", "model": "m",
        "api_key": {"env": "RAGSERVE_TEST_LLM_KEY"}}}))
    with pytest.raises(ConfigurationError, match="RAGSERVE_TEST_LLM_KEY"):
        missing.warm_up()
