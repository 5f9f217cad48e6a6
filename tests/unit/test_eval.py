"""The BEIR evaluation harness: loading, metrics (pytrec_eval), and a real end-to-end run."""

from __future__ import annotations

import json

import pytest

from ragserve.cli import main as cli
from ragserve.eval.beir import evaluate_run, load_beir

DOCS = {
    "d1": ("Espresso machines", "Descale the espresso machine every two weeks with tablets."),
    "d2": ("Volcanoes", "Mount Etna on Sicily is one of the most active volcanoes in Europe."),
    "d3": ("Vector search", "Qdrant stores dense vectors and answers nearest-neighbour queries."),
    "d4": ("Tides", "Tides are caused by the gravitational pull of the moon and the sun."),
    "d5": ("Bread", "Sourdough bread rises thanks to wild yeast and lactic acid bacteria."),
}
QUERIES = {"q1": "how often should I descale my coffee machine",
           "q2": "which active volcano is on Sicily",
           "q3": "what causes ocean tides",
           "q9": "a query without judgements is ignored"}
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 2}, "q3": {"d4": 1}}


@pytest.fixture
def beir_dir(tmp_path):
    (tmp_path / "qrels").mkdir()
    with open(tmp_path / "corpus.jsonl", "w") as f:
        for did, (title, text) in DOCS.items():
            f.write(json.dumps({"_id": did, "title": title, "text": text, "metadata": {}}) + "\n")
    with open(tmp_path / "queries.jsonl", "w") as f:
        for qid, text in QUERIES.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    # BEIR writes qrels with a header and CRLF line endings
    rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, r in QRELS.items() for d, g in r.items()]
    (tmp_path / "qrels" / "test.tsv").write_bytes("\r\n".join(rows).encode() + b"\r\n")
    return tmp_path


def test_load_beir_reads_graded_qrels_and_judged_queries(beir_dir):
    ds = load_beir(beir_dir, "test")
    assert ds.qrels == QRELS
    assert set(ds.queries) == {"q1", "q2", "q3"} and len(ds.corpus) == 5
    assert len(load_beir(beir_dir, "test", max_queries=2).queries) == 2
    with pytest.raises(FileNotFoundError):
        load_beir(beir_dir, "train")


def test_metrics_follow_trec_eval_definitions():
    qrels = {"q": {"a": 2, "b": 1}}
    perfect = evaluate_run(qrels, {"q": {"a": 3.0, "b": 2.0, "x": 1.0}})
    assert perfect["ndcg@10"] == pytest.approx(1.0) and perfect["mrr@10"] == 1.0
    swapped = evaluate_run(qrels, {"q": {"b": 3.0, "a": 2.0}})
    assert 0.5 < swapped["ndcg@10"] < 1.0  # graded: the grade-2 document belongs first
    late = evaluate_run(qrels, {"q": {**{f"x{i}": 100.0 - i for i in range(10)}, "a": 1.0}})
    assert late["mrr@10"] == 0.0 and late["recall@10"] == 0.0 and late["recall@100"] == 0.5
    assert evaluate_run(qrels, {})["ndcg@10"] == 0.0  # a query without results scores zero


def test_cli_eval_rejects_a_prefetch_floor_below_one(beir_dir):
    with pytest.raises(SystemExit) as exit_:
        cli(["eval", str(beir_dir), "--modes", "hybrid", "--prefetch-min", "0"])
    assert exit_.value.code == 2


@pytest.mark.slow
def test_cli_eval_in_process_end_to_end(beir_dir, tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert cli(["eval", str(beir_dir), "--modes", "dense,sparse,hybrid+rerank",
                "--fusion-weights", "0.3,0.7", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["documents"] == 5 and figures["chunks"] == 5
    modes = {r["mode"]: r for r in figures["results"]}
    assert set(modes) == {"dense", "sparse", "hybrid+rerank (lexical_fusion@0.3)",
                          "hybrid+rerank (lexical_fusion@0.7)"}
    assert modes["dense"]["ndcg@10"] > 0.9 and modes["dense"]["recall@10"] == 1.0
    assert modes["sparse"]["recall@10"] == 1.0  # every query shares a word with its document
    assert cli(["eval", str(beir_dir), "--modes", "fancy"]) == 2
    assert "nDCG@10" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_eval_compares_hybrid_fusions_on_one_index(beir_dir, tmp_path):
    out = tmp_path / "fusions.json"
    assert cli(["eval", str(beir_dir), "--modes", "hybrid", "--fusions", "rrf,dbsf",
                "--prefetch-min", "3", "--json", str(out)]) == 0
    results = {r["mode"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"hybrid/rrf", "hybrid/dbsf"}
    assert all(r["recall@10"] == 1.0 for r in results.values())
    assert cli(["eval", str(beir_dir), "--modes", "hybrid", "--fusions", "sum"]) == 2
