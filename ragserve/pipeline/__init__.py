"""The request flow: read path (``Ranker``, ``AnswerCore``), write path (``Indexer``), and
``RAGPipeline`` composing them over a ``StageSet``."""

from ragserve.pipeline.answers import NO_PASSAGES_ANSWER, AnswerCore
from ragserve.pipeline.calls import StageCaller, Stopwatch
from ragserve.pipeline.indexer import Indexer
from ragserve.pipeline.rag import RAGPipeline
from ragserve.pipeline.ranking import Ranker, Ranking
from ragserve.pipeline.stageset import StageSet

__all__ = ["RAGPipeline", "StageSet", "Ranker", "Ranking", "AnswerCore", "Indexer",
           "StageCaller", "Stopwatch", "NO_PASSAGES_ANSWER"]
