"""A causal LM run in-process (any name, folder or GGUF file): the shared half of the local
engines (``LocalChatGenerator``) and the transformers engine (``TransformersGenerator``).
The CTranslate2 engine is ``ragserve.generation.ctranslate2``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from ragserve.config import GeneratorConfig, LocalGeneratorConfig
from ragserve.devices import pick_device
from ragserve.errors import InvalidRequestError, ModelNotReadyError
from ragserve.generation.prompt import PromptPlan, plan_prompt
from ragserve.models import ResolvedModel, resolve_model
from ragserve.schemas import GenerationRequest, GenerationResult

__all__ = ["LocalChatGenerator", "TransformersGenerator", "converted_model_dir", "write_atomically"]

log = logging.getLogger("ragserve.generator")

_END = object()
_STALE_TMP_S = 3600.0


def converted_model_dir(cache_dir: str | os.PathLike, resolved: ResolvedModel) -> Path:
    """Where the converted copy of a GGUF checkpoint lives: ``<cache_dir>/<name>-<hash>``.

    The hash covers the checkpoint's folder, file name and size, so a replaced file gets a
    new folder instead of a stale one.
    """
    gguf = Path(resolved.path) / (resolved.gguf_file or "")
    size = gguf.stat().st_size if gguf.is_file() else -1
    key = f"{Path(resolved.path).resolve()}|{resolved.gguf_file}|{size}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    stem = Path(resolved.gguf_file or resolved.name).name.removesuffix(".gguf")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "model"
    return Path(cache_dir).expanduser() / f"{safe}-{digest}"


def write_atomically(target: Path, write: Callable[[Path], None], marker: str) -> bool:
    """Build a cache folder with ``write(tmp)`` in a temporary sibling folder (which ``write``
    creates) and rename it to ``target``, so a crash never leaves half a cache. Two writers
    racing (two replicas) both finish; the loser's rename fails and the winner's copy stays.
    Returns whether ``target/marker`` exists afterwards; an ``OSError`` (an unwritable cache)
    is logged, not raised."""
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            # a crashed conversion's leftovers; a live one is younger than this
            if time.time() - stale.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(stale, ignore_errors=True)
        write(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / marker).is_file():
                raise
            # another replica finished the same conversion first: keep theirs
    except OSError as exc:
        log.warning("could not cache the converted model in %s (%s); the next start "
                    "converts it again", target, exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return (target / marker).is_file()


class LocalChatGenerator:
    """What the local engines share: config, the model's own tokenizer and chat template,
    prompt planning with the template's measured overheads, exact token counts, the worker
    thread, streaming, cancellation, finish reasons and ``health``. An engine subclass sets
    ``engine``, loads ``_model``/``_tokenizer`` in ``_load`` and decodes in ``_decode``.

    Concurrency: one decode at a time per instance (a lock). On CPU a second concurrent
    generation would only split the same cores; scale with replicas instead. Generation runs
    in a worker thread; ``generate`` and ``stream`` never block the event loop. If the caller
    goes away — ``generate`` cancelled (a stage timeout), or ``stream`` closed or cancelled —
    the decode loop ends at the next token.

    Token counts are exact: the model's tokenizer, and ``usage`` from the token ids (the
    end-of-turn token included when the model stopped on it).
    """

    engine = "unset"
    _streamer_skips_prompt = True  # whether _decode feeds the prompt to the streamer first

    def __init__(self, config: GeneratorConfig | LocalGeneratorConfig) -> None:
        if isinstance(config, LocalGeneratorConfig):
            config = GeneratorConfig(backend=config)
        if not isinstance(config.backend, LocalGeneratorConfig):
            raise TypeError(f"{type(self).__name__} needs a LocalGeneratorConfig backend")
        self.config = config
        self.backend_config: LocalGeneratorConfig = config.backend
        self.name = f"local:{self.backend_config.model}"
        self._model = None
        self._tokenizer = None
        self._device = "unloaded"
        self._dtype = "unloaded"
        self._source = "unloaded"
        self._loaded_from: str | None = None
        self._converted: str | None = None
        self._load_s: float | None = None
        self._eos_ids: set[int] = set()
        self._overheads = (4, 3)
        self._counts = {"generations": 0, "cancelled": 0}
        self._load_lock = threading.Lock()
        self._lock = threading.Lock()  # one decode at a time

    # ------------------------------------------------------------------ engine hooks

    def _load(self) -> None:
        """Set ``_model``, ``_tokenizer``, ``_eos_ids`` and the health fields; blocking."""
        raise NotImplementedError

    def _decode(self, prompt_ids: list[int], max_new: int, stop: threading.Event,
                streamer) -> list[int]:
        """The new token ids (at most ``max_new``), each also passed to ``streamer.put``;
        returns early once ``stop`` is set. Called with the decode lock held."""
        raise NotImplementedError

    # ------------------------------------------------------------------ loading

    def warm_up(self) -> None:
        with self._load_lock:
            if self._model is None:
                self._load()
                self._overheads = self._measure_overheads()

    @staticmethod
    def _from_gguf(resolved: ResolvedModel):
        """A GGUF checkpoint dequantized by transformers into a dense float32 model."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        gguf = resolved.gguf_file
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, gguf_file=gguf)
        # Ask for a plain dense model: with packed GGUF kernels the model could not be saved.
        model = AutoModelForCausalLM.from_pretrained(
            resolved.path, gguf_file=gguf, dtype=torch.float32,
            quantization_config=GgufConfig(gguf_file=gguf, dequantize=True),
        )
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer = None  # dequantized already; the quantizer only blocks saving
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
        return model, tokenizer

    @staticmethod
    def _save_converted(model, tokenizer, target: Path, resolved: ResolvedModel) -> bool:
        """The dequantized model as a transformers folder at ``target`` (atomically)."""

        def write(tmp: Path) -> None:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "ragserve-source.json").write_text(json.dumps(
                {"path": resolved.path, "gguf_file": resolved.gguf_file,
                 "source": resolved.source}, indent=2))

        return write_atomically(target, write, "config.json")

    def _measure_overheads(self) -> tuple[int, int]:
        """Tokens the chat template adds per message and to prime the reply."""
        tok = self._tokenizer
        x = "x"
        msgs = [{"role": "system", "content": x}, {"role": "user", "content": x}]
        bare = len(self._template_ids(msgs, add_generation_prompt=False))
        primed = len(self._template_ids(msgs, add_generation_prompt=True))
        per_message = max(-(-(bare - 2 * len(tok.encode(x, add_special_tokens=False))) // 2), 0)
        return per_message, max(primed - bare, 0)

    def _template_ids(self, messages: list[dict], *, add_generation_prompt: bool) -> list[int]:
        out = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=True,
            return_dict=True,
        )
        return list(out["input_ids"])

    # ------------------------------------------------------------------ public

    def _require(self):
        if self._model is None:
            raise ModelNotReadyError(f"generator {self.name!r} is not warmed up")
        return self._model, self._tokenizer

    def count_tokens(self, text: str) -> int:
        # Fast tokenizers may be shared across threads as long as no call changes their
        # truncation or padding settings; none here does.
        _, tok = self._require()
        return len(tok.encode(text, add_special_tokens=False))

    async def aclose(self) -> None:
        """The weights go with the process; nothing to close."""

    def health(self) -> dict:
        return {
            "model": self.backend_config.model,
            "engine": self.engine,
            "device": self._device,
            "dtype": self._dtype,
            "source": self._source,
            "loaded_from": self._loaded_from,
            "converted_path": self._converted,
            "load_s": self._load_s,
            "busy": self._lock.locked(),
            **self._counts,
        }

    @property
    def busy(self) -> bool:
        """True while a generation holds the model (tests use it to see a stop take effect)."""
        return self._lock.locked()

    def plan(self, request: GenerationRequest) -> PromptPlan:
        """The prompt plan ``generate`` uses, with the chat template's measured overheads."""
        self._require()
        per_message, reply = self._overheads
        return plan_prompt(request, self.config, self.count_tokens,
                           message_overhead=per_message, reply_overhead=reply)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self._require()
        stop = threading.Event()
        future = asyncio.get_running_loop().run_in_executor(
            None, self._run, request, stop, None, time.perf_counter()
        )
        try:
            return await future
        except asyncio.CancelledError:
            stop.set()  # the worker thread cannot be cancelled; make it stop at the next token
            raise

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        self._require()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def emit(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        started = time.perf_counter()

        def work() -> GenerationResult:
            try:
                return self._run(request, stop, emit, started)
            finally:
                emit(_END)

        future = loop.run_in_executor(None, work)
        # If the consumer leaves early nobody awaits the future; retrieve its outcome anyway.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                yield {"delta": item}
            yield {"result": await future}
        finally:
            stop.set()  # no-op when finished; stops the model loop when the consumer left

    # ------------------------------------------------------------------ worker thread

    def _run(
        self,
        request: GenerationRequest,
        stop: threading.Event,
        on_text: Callable[[str], None] | None,
        started: float,
    ) -> GenerationResult:
        """The answer; ``started`` (``perf_counter``) is when the caller asked, so the result's
        ``first_token_ms`` includes waiting for the model's lock."""
        from transformers import TextStreamer

        _, tok = self._require()
        plan = self.plan(request)
        prompt_ids = self._template_ids(plan.messages, add_generation_prompt=True)
        prompt_len = len(prompt_ids)
        # The plan's estimate can miss the template by a token or two; never overrun the window.
        max_new = min(plan.max_tokens, self.backend_config.context_window - prompt_len)
        if max_new < 1:
            raise InvalidRequestError(
                f"the prompt takes {prompt_len} tokens of the {self.backend_config.context_window}"
                "-token context window, leaving no room for an answer")

        pieces: list[str] = []
        first: list[float] = []  # when the first text came

        class _Collect(TextStreamer):
            """Detokenizes incrementally (whole words, never half a UTF-8 character)."""

            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    if not first:
                        first.append(time.perf_counter())
                    pieces.append(text)
                    if on_text is not None:
                        on_text(text)

        streamer = _Collect(tok, skip_prompt=self._streamer_skips_prompt,
                            skip_special_tokens=True)
        with self._lock:
            if stop.is_set():
                new_tokens = []  # the consumer left while waiting for the lock
            else:
                new_tokens = self._decode(prompt_ids, max_new, stop, streamer)
        self._counts["generations"] += 1
        if stop.is_set():
            finish = "cancelled"
            self._counts["cancelled"] += 1
        elif len(new_tokens) >= max_new and (not new_tokens or new_tokens[-1] not in self._eos_ids):
            finish = "length"
        else:
            finish = "stop"
        return plan.result("".join(pieces), backend=self.name,
                           usage=plan.usage(prompt_len, len(new_tokens)), finish_reason=finish,
                           first_token_ms=round((first[0] - started) * 1000, 2) if first else None)


class _EventStop:
    """A StoppingCriteria that ends generation once the event is set (consumer gone)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool,
                          device=input_ids.device)


class TransformersGenerator(LocalChatGenerator):
    """Generation with a local transformers causal LM, through its chat template
    (``engine: transformers``).

    Lifecycle: ``__init__`` stores the config; ``warm_up()`` (synchronous, seconds of CPU —
    callers run it in a thread) resolves the model and loads it. A GGUF checkpoint is
    dequantized by transformers on first load (SmolLM2-135M: 16–19 s on 2 busy cores) and
    saved as safetensors under ``cache_dir`` (see ``converted_model_dir``), written to a
    temporary folder and renamed into place so a crash never leaves half a cache; later starts
    load that copy (0.2–0.3 s here once the files are in the page cache; MODELS.md: ~2 s cold).
    A cache that cannot be written, or a copy that no longer loads, is logged and the GGUF
    file is used: never fatal.

    Device ``auto``: CUDA in float16 when visible, else CPU in float32. Concurrency,
    cancellation and token counting: see ``LocalChatGenerator``.
    """

    engine = "transformers"

    def _load(self) -> None:
        import torch

        cfg = self.backend_config
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        device = pick_device(cfg.device)
        dtype = torch.float16 if device == "cuda" else torch.float32
        resolved = resolve_model(cfg.model, cfg.gguf_file)
        start = time.perf_counter()
        if resolved.gguf_file:
            target = converted_model_dir(cfg.cache_dir, resolved)
            loaded = None
            if (target / "config.json").is_file():
                try:
                    loaded = self._from_pretrained(str(target), dtype, local=True)
                    source, loaded_from = "cache", str(target)
                except Exception as exc:  # noqa: BLE001 - a damaged copy: the GGUF still works
                    log.warning("converted copy %s failed to load (%s: %s); loading the GGUF "
                                "file instead", target, type(exc).__name__, exc)
            if loaded is None:
                loaded = self._from_gguf(resolved)
                source, loaded_from = "gguf", str(Path(resolved.path) / resolved.gguf_file)
                if not target.exists():
                    self._save_converted(*loaded, target, resolved)
            model, tokenizer = loaded
            self._converted = str(target) if (target / "config.json").is_file() else None
        else:
            model, tokenizer = self._from_pretrained(resolved.path, dtype,
                                                     local=resolved.source != "hub")
            source, loaded_from = "pretrained", resolved.path
        model.to(device=device, dtype=dtype)
        model.eval()
        eos = model.generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self._model, self._tokenizer = model, tokenizer
        self._device, self._dtype = device, str(dtype).removeprefix("torch.")
        self._source, self._loaded_from = source, loaded_from
        self._load_s = round(time.perf_counter() - start, 3)
        log.info("generator loaded: %s from %s (%s) on %s in %.1fs",
                 cfg.model, loaded_from, source, device, self._load_s)

    @staticmethod
    def _from_pretrained(path: str, dtype, *, local: bool):
        from huggingface_hub import is_offline_mode
        from transformers import AutoModelForCausalLM, AutoTokenizer

        def load(local_only: bool):
            tok = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype,
                                                         local_files_only=local_only)
            return model, tok

        if local or is_offline_mode():
            return load(True)
        try:  # cache first: without a network the hub client retries for a long time
            return load(True)
        except OSError:
            return load(False)

    def _decode(self, prompt_ids: list[int], max_new: int, stop: threading.Event,
                streamer) -> list[int]:
        import torch
        from transformers import StoppingCriteriaList

        model, tok = self._model, self._tokenizer
        input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=self._device)
        attention_mask = torch.ones_like(input_ids)
        temperature = self.backend_config.temperature
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {
            "do_sample": False}
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new,
                repetition_penalty=self.backend_config.repetition_penalty,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None
                else tok.eos_token_id,
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([_EventStop(stop)]),
                **sampling,
            )
        return output[0, len(prompt_ids):].tolist()
