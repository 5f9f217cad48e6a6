"""Retrieval evaluation on BEIR-format datasets."""

from ragserve.eval.beir import BeirDataset, evaluate_run, load_beir

__all__ = ["BeirDataset", "evaluate_run", "load_beir"]
