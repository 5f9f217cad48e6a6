"""The lexical analyzer (``ragserve.lexical``): Snowball English terms, stopwords, possessives,
its identity, and that every stage matching words uses this one definition."""

from __future__ import annotations

import ast
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ragserve.config import ExtractiveGeneratorConfig
from ragserve.generation import extractive
from ragserve.lexical import ANALYZER_ID, STOPWORDS, analyze, bm25_scores, stem, tokenize
from ragserve.reranking.lexical import LexicalFusionScorer
from ragserve.retrieval.sparse import LexicalEncoder, term_index
from ragserve.schemas import ScoredChunk

ROOT = Path(__file__).resolve().parents[2] / "ragserve"


@pytest.mark.parametrize("words", [
    ["process", "processes", "processing", "processed"],  # the old stemmer: proces / process / ...
    ["query", "queries", "queried"],                       # the old stemmer kept "query" apart
    ["study", "studies", "studied"],
    ["activate", "activated", "activation", "activates"],
    ["cell", "cells"],
])
def test_inflections_of_a_word_share_one_term(words):
    assert len({t for w in words for t in analyze(w)}) == 1


@pytest.mark.parametrize("a, b", [("news", "new"), ("universe", "university"), ("gene", "general")])
def test_different_words_stay_apart(a, b):
    assert analyze(a) != analyze(b)


def test_snowball_english_stems():
    assert [stem(w) for w in ["process", "processes", "queries", "query", "running", "generously"]] \
        == ["process", "process", "queri", "queri", "run", "generous"]


def test_stopwords_are_dropped_before_stemming():
    assert analyze("The effect of the drug on the heart is not known") == \
        ["effect", "drug", "heart", "known"]
    assert {"the", "of", "and", "is", "not"} <= STOPWORDS
    assert analyze("what causes it") == ["what", "caus"]  # question words carry meaning: kept
    assert analyze("the of and") == []


def test_tokens_are_lower_case_words_without_possessives():
    assert tokenize("The Patient's T-cells; patients' IL-2 (5mg/kg)") == \
        ["patient", "t", "cells", "patients", "il", "2", "5mg", "kg"]
    assert analyze("patient's") == analyze("patients'") == analyze("patients") == ["patient"]
    assert analyze("O’Brien don't") == analyze("O'Brien dont") == ["obrien", "dont"]
    assert analyze("Zürich naïve") == ["zürich", "naïv"]  # Unicode words are words
    assert analyze("") == [] and analyze("?!, ...") == []


def test_identity_pins_the_analysis():
    # Changing the analysis changes stored index terms: bump the version in ANALYZER_ID then.
    assert ANALYZER_ID == "snowball-english-v1"
    assert analyze("Vitamin D supplementation reduces fractures in elderly women's hips.") == \
        ["vitamin", "d", "supplement", "reduc", "fractur", "elder", "women", "hip"]


def test_analysis_is_thread_safe():
    texts = [f"processing queries about cells number {i}" for i in range(200)]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(analyze, texts)) == [analyze(t) for t in texts]


# ------------------------------------------------------------ one definition for every user

def test_the_retrievers_sparse_vectors_use_the_analyzer():
    encoder = LexicalEncoder()
    assert encoder.analyzer == ANALYZER_ID
    text = "Processes of querying: queries processed."
    assert encoder.terms(text) == analyze(text)
    indices, weights = encoder.document(text)
    assert sorted(indices) == sorted({term_index(t) for t in analyze(text)})
    assert len(indices) == 2 and all(w > 0 for w in weights)  # process, queri
    assert encoder.query("processing query")[0] == sorted(indices)


def test_the_rerankers_lexical_fallback_uses_the_analyzer():
    # Only the stemmed forms are shared between the query and the first passage.
    scores = bm25_scores("processing queries", ["the query was processed", "unrelated words"])
    assert scores[0] > 0 and scores[1] == 0.0
    passages = [ScoredChunk(chunk_id=str(i), doc_id=str(i), chunk_index=0, text=t,
                            score=0.5, retrieval_score=0.5)
                for i, t in enumerate(["unrelated words here", "the query was processed"])]
    assert LexicalFusionScorer(0.5).score("processing queries", passages) == [0.0, 0.5]


def test_the_extractive_generator_uses_the_analyzer():
    from ragserve.passages import content_terms

    assert extractive.content_terms is content_terms  # the one analysis of sentence words
    assert content_terms("Processes of querying: queries processed.") == {"process", "queri"}
    assert isinstance(extractive.ExtractiveGenerator(ExtractiveGeneratorConfig()),
                      extractive.ExtractiveGenerator)


def test_no_other_module_analyses_words_on_its_own():
    """The stemmer and stopword list live in ``ragserve/lexical.py`` only: any other module
    that matches words imports the analysis from there."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path == ROOT / "lexical.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] in {"Stemmer", "nltk", "snowballstemmer"} for a in node.names):
                offenders.append(f"{path.relative_to(ROOT)} imports a stemmer")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in {"Stemmer", "nltk", "snowballstemmer"}:
                offenders.append(f"{path.relative_to(ROOT)} imports a stemmer")
            elif isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and "STOPWORD" in t.id.upper() for t in node.targets):
                offenders.append(f"{path.relative_to(ROOT)} defines its own stopwords")
    assert offenders == []
