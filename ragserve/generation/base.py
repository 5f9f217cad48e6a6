"""The generator role, and the backend interface behind it (sync/async rule: see
``ragserve.embedding.base``)."""

from __future__ import annotations

from typing import AsyncIterator, Protocol, runtime_checkable

from ragserve.schemas import GenerationRequest, GenerationResult

__all__ = ["Generator", "GeneratorBackend"]


@runtime_checkable
class Generator(Protocol):
    """The stage: answers a question from numbered passages.

    ``stream`` yields ``{"delta": text}`` items, then exactly one ``{"result":
    GenerationResult}``. Both raise ``StageUnavailableError`` (with the backends tried in
    ``details["attempts"]``) when no backend could answer, and ``InvalidRequestError`` for a
    request no backend can take."""

    async def generate(self, request: GenerationRequest) -> GenerationResult: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[dict]: ...

    async def health(self) -> dict: ...


@runtime_checkable
class GeneratorBackend(Protocol):
    """One way to answer (a local model, an OpenAI-compatible server, extractive sentences),
    or the fallback chain of several (``FallbackGenerator``), inside the generator stage."""

    name: str

    def warm_up(self) -> None:
        """Load what the backend needs, once (a model's weights); blocking."""

    async def generate(self, request: GenerationRequest) -> GenerationResult: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[dict]: ...

    def count_tokens(self, text: str) -> int: ...

    def health(self) -> dict:
        """A snapshot for ``/readyz``; never raises."""

    async def aclose(self) -> None:
        """Release connections; the backend is not used afterwards."""
