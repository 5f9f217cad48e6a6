"""Any server that speaks OpenAI's ``/chat/completions``: vLLM, TGI, Ray Serve LLM, OpenAI."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import httpx

from ragserve.config import GeneratorConfig, OpenAIGeneratorConfig
from ragserve.errors import ConfigurationError, StageTimeoutError, StageUnavailableError
from ragserve.generation.prompt import PromptPlan, TiktokenBudgeting
from ragserve.schemas import GenerationRequest, GenerationResult, Usage

__all__ = ["OpenAICompatibleGenerator"]


class OpenAICompatibleGenerator(TiktokenBudgeting):
    """Generation by a remote OpenAI-compatible server.

    ``warm_up()`` is synchronous and cheap (it loads the tiktoken encoding); the
    ``httpx.AsyncClient`` is created on first use inside the running event loop (and again if
    a later call runs in another loop), so construction and warm-up work from any thread.
    ``aclose()`` closes it.

    Budgets use tiktoken (``GeneratorConfig.token_encoding``): the server's tokenizer is
    unknown here, so the context window is an estimate; usage comes from the server when it
    reports it (streams ask for it with ``stream_options.include_usage``) and from tiktoken
    otherwise.

    Timeouts (owned here, ``timeout_s``): a non-streaming call gets ``timeout_s`` in all; a
    stream gets ``timeout_s`` to connect and between any two chunks. Failures are typed:
    timeouts → ``StageTimeoutError``; connection failures and every HTTP error status →
    ``StageUnavailableError`` with ``status`` and ``retry_after`` in ``details``. A 4xx is
    reported as unavailable too: the request we built (model name, key, limits) is at fault,
    not the end user's question, so callers may fall back as for an outage.
    """

    def __init__(self, config: GeneratorConfig | OpenAIGeneratorConfig) -> None:
        if isinstance(config, OpenAIGeneratorConfig):
            config = GeneratorConfig(backend=config)
        if not isinstance(config.backend, OpenAIGeneratorConfig):
            raise TypeError("OpenAICompatibleGenerator needs an OpenAIGeneratorConfig backend")
        self.config = config
        self.backend_config: OpenAIGeneratorConfig = config.backend
        self.name = f"openai:{self.backend_config.model}"
        self.url = self.backend_config.base_url.rstrip("/") + "/chat/completions"
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def health(self) -> dict:
        return {"model": self.backend_config.model, "device": "remote", "source": self.url}

    async def aclose(self) -> None:
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            await client.aclose()

    # ------------------------------------------------------------------ HTTP

    def warm_up(self) -> None:
        """The tiktoken encoding, and the API key's source checked (a missing Secret fails
        the load, which ``/readyz`` shows, rather than every request)."""
        super().warm_up()
        if self.backend_config.api_key is not None:
            self._api_key()

    def _api_key(self) -> str:
        try:
            return self.backend_config.api_key.resolve()
        except ValueError as exc:  # a missing Secret: say which, never the value
            raise ConfigurationError(f"generator api_key: {exc}") from None

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        # A client's connections belong to the loop that opened them; a call from another loop
        # (tests, a replica restarted in-process) gets a fresh client.
        if self._client is None or self._client_loop is not loop:
            headers = {"Accept": "application/json"}
            if self.backend_config.api_key is not None:
                headers["Authorization"] = f"Bearer {self._api_key()}"
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.backend_config.timeout_s), headers=headers
            )
            self._client_loop = loop
        return self._client

    def _body(self, plan: PromptPlan, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.backend_config.model,
            "messages": plan.messages,
            "max_tokens": plan.max_tokens,
            "temperature": self.backend_config.temperature,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def _transport_error(self, exc: Exception) -> StageUnavailableError:
        details = {"url": self.url, "error": type(exc).__name__}
        if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError)):
            return StageTimeoutError(
                f"LLM server did not answer within {self.backend_config.timeout_s}s",
                details={**details, "timeout_s": self.backend_config.timeout_s},
            )
        return StageUnavailableError(f"LLM server unreachable: {exc or type(exc).__name__}",
                                     details=details)

    def _status_error(self, response: httpx.Response) -> StageUnavailableError:
        message = response.reason_phrase or "error"
        try:
            payload = response.json()
            err = payload.get("error", payload) if isinstance(payload, dict) else payload
            if isinstance(err, dict):
                message = str(err.get("message") or err.get("detail") or err)
            elif err:
                message = str(err)
        except (ValueError, UnicodeDecodeError):
            if response.text.strip():
                message = response.text.strip()[:500]
        details: dict[str, Any] = {"url": self.url, "status": response.status_code}
        if "retry-after" in response.headers:
            details["retry_after"] = response.headers["retry-after"]
        return StageUnavailableError(
            f"LLM server answered {response.status_code}: {message}", details=details
        )

    def _usage(self, plan: PromptPlan, reported: dict | None, text: str) -> Usage:
        if reported and reported.get("prompt_tokens") is not None:
            prompt = int(reported.get("prompt_tokens") or 0)
            completion = int(reported.get("completion_tokens") or 0)
            return plan.usage(prompt, completion)
        return plan.usage(plan.prompt_tokens, self.count_tokens(text))

    # ------------------------------------------------------------------ generation

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        plan = self.plan(request)
        client = self._http()
        try:
            response = await asyncio.wait_for(
                client.post(self.url, json=self._body(plan, stream=False)),
                self.backend_config.timeout_s,
            )
        except (httpx.TransportError, asyncio.TimeoutError) as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 400:
            raise self._status_error(response)
        try:
            payload = response.json()
            choice = payload["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise StageUnavailableError(
                "LLM server sent a malformed completion", details={"url": self.url}
            ) from exc
        finish = choice.get("finish_reason") or "stop"
        return plan.result(text, backend=self.name,
                           usage=self._usage(plan, payload.get("usage"), text),
                           finish_reason=finish)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        plan = self.plan(request)
        client = self._http()
        parts: list[str] = []
        usage: dict | None = None
        finish = "stop"
        try:
            async with client.stream("POST", self.url, json=self._body(plan, stream=True)) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise self._status_error(resp)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, ": keep-alive" comments, event: lines
                    data = line[len("data:"):].strip()
                    if data == "[DONE]":
                        break
                    event = self._event(data)
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices") or []:
                        if choice.get("index", 0) != 0:
                            continue
                        delta = (choice.get("delta") or {}).get("content")
                        if delta:
                            parts.append(delta)
                            yield {"delta": delta}
                        finish = choice.get("finish_reason") or finish
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        text = "".join(parts)
        yield {"result": plan.result(text, backend=self.name,
                                     usage=self._usage(plan, usage, text),
                                     finish_reason=finish)}

    def _event(self, data: str) -> dict:
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise StageUnavailableError(
                "LLM server sent a malformed stream event", details={"url": self.url}
            ) from exc
        if not isinstance(event, dict):
            raise StageUnavailableError("LLM server sent a malformed stream event",
                                        details={"url": self.url})
        if event.get("error"):
            err = event["error"]
            message = err.get("message") if isinstance(err, dict) else str(err)
            raise StageUnavailableError(f"LLM server failed mid-stream: {message}",
                                        details={"url": self.url})
        return event
