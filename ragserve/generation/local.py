"""A causal LM run in-process with transformers (any name, folder or GGUF file)."""

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
from ragserve.embedding import pick_device
from ragserve.errors import InvalidRequestError, ModelNotReadyError
from ragserve.generation.prompt import PromptPlan, plan_prompt
from ragserve.models import ResolvedModel, resolve_model
from ragserve.schemas import GenerationRequest, GenerationResult

__all__ = ["TransformersGenerator", "converted_model_dir"]

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


class _EventStop:
    """A StoppingCriteria that ends generation once the event is set (consumer gone)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool,
                          device=input_ids.device)


class TransformersGenerator:
    """Generation with a local transformers causal LM, through its chat template.

    Lifecycle: ``__init__`` stores the config; ``warm_up()`` (synchronous, seconds of CPU —
    callers run it in a thread) resolves the model and loads it. A GGUF checkpoint is
    dequantized by transformers on first load (SmolLM2-135M: 16–19 s on 2 busy cores) and
    saved as safetensors under ``cache_dir`` (see ``converted_model_dir``), written to a
    temporary folder and renamed into place so a crash never leaves half a cache; later starts
    load that copy (0.2–0.3 s here once the files are in the page cache; MODELS.md: ~2 s cold).
    A cache that cannot be written, or a copy that no longer loads, is logged and the GGUF
    file is used: never fatal.

    Device ``auto``: CUDA in float16 when visible, else CPU in float32.

    Concurrency: one ``model.generate`` at a time per instance (a lock). On CPU a second
    concurrent generation would only split the same cores; scale with replicas instead.
    Generation runs in a worker thread; ``generate`` and ``stream`` never block the event
    loop. If the caller goes away — ``generate`` cancelled (a stage timeout), or ``stream``
    closed or cancelled — a stopping criterion ends the model loop at the next token.

    Token counts are exact: the model's tokenizer, and ``usage`` from the token ids.
    """

    def __init__(self, config: GeneratorConfig | LocalGeneratorConfig) -> None:
        if isinstance(config, LocalGeneratorConfig):
            config = GeneratorConfig(backend=config)
        if not isinstance(config.backend, LocalGeneratorConfig):
            raise TypeError("TransformersGenerator needs a LocalGeneratorConfig backend")
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
        self._overheads = (4, 3)
        self._counts = {"generations": 0, "cancelled": 0}
        self._load_lock = threading.Lock()
        self._lock = threading.Lock()  # one generate() at a time

    # ------------------------------------------------------------------ loading

    def warm_up(self) -> None:
        with self._load_lock:
            if self._model is None:
                self._load()

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
        self._model, self._tokenizer = model, tokenizer
        self._device, self._dtype = device, str(dtype).removeprefix("torch.")
        self._source, self._loaded_from = source, loaded_from
        self._load_s = round(time.perf_counter() - start, 3)
        self._overheads = self._measure_overheads()
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

    @staticmethod
    def _from_gguf(resolved: ResolvedModel):
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
    def _save_converted(model, tokenizer, target: Path, resolved: ResolvedModel) -> None:
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            for stale in target.parent.glob(f".{target.name}.tmp-*"):
                # a crashed conversion's leftovers; a live one is younger than this
                if time.time() - stale.stat().st_mtime > _STALE_TMP_S:
                    shutil.rmtree(stale, ignore_errors=True)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "ragserve-source.json").write_text(json.dumps(
                {"path": resolved.path, "gguf_file": resolved.gguf_file,
                 "source": resolved.source}, indent=2))
            try:
                os.rename(tmp, target)
            except OSError:
                if not (target / "config.json").is_file():
                    raise
                # another replica finished the same conversion first: keep theirs
        except OSError as exc:
            log.warning("could not cache the converted model in %s (%s); the next start "
                        "converts the GGUF file again", target, exc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

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

    def health(self) -> dict:
        return {
            "model": self.backend_config.model,
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
            None, self._run, request, stop, None
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

        def work() -> GenerationResult:
            try:
                return self._run(request, stop, emit)
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
    ) -> GenerationResult:
        import torch
        from transformers import StoppingCriteriaList, TextStreamer

        model, tok = self._require()
        plan = self.plan(request)
        enc = tok.apply_chat_template(plan.messages, add_generation_prompt=True,
                                      tokenize=True, return_dict=True, return_tensors="pt")
        input_ids = enc["input_ids"].to(self._device)
        attention_mask = enc["attention_mask"].to(self._device)
        prompt_len = int(input_ids.shape[1])
        # The plan's estimate can miss the template by a token or two; never overrun the window.
        max_new = min(plan.max_tokens, self.backend_config.context_window - prompt_len)
        if max_new < 1:
            raise InvalidRequestError(
                f"the prompt takes {prompt_len} tokens of the {self.backend_config.context_window}"
                "-token context window, leaving no room for an answer")

        pieces: list[str] = []

        class _Collect(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    pieces.append(text)
                    if on_text is not None:
                        on_text(text)

        streamer = _Collect(tok, skip_prompt=True, skip_special_tokens=True)
        temperature = self.backend_config.temperature
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {
            "do_sample": False}
        with self._lock:
            if stop.is_set():
                output = input_ids  # the consumer left while waiting for the lock
            else:
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
        new_tokens = output[0, prompt_len:].tolist()
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self._counts["generations"] += 1
        if stop.is_set():
            finish = "cancelled"
            self._counts["cancelled"] += 1
        elif len(new_tokens) >= max_new and (not new_tokens or new_tokens[-1] not in eos_ids):
            finish = "length"
        else:
            finish = "stop"
        return plan.result("".join(pieces), backend=self.name,
                           usage=plan.usage(prompt_len, len(new_tokens)), finish_reason=finish)
