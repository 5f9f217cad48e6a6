"""The local model run by CTranslate2 (``engine: ctranslate2``): int8 on CPU by default."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from pathlib import Path

from ragserve.generation.local import LocalChatGenerator, converted_model_dir, write_atomically
from ragserve.models import ResolvedModel, resolve_model

__all__ = ["CTranslate2Generator", "ctranslate2_model_dir"]

log = logging.getLogger("ragserve.generator")

_SOURCE = "ragserve-source.json"
_TOKENIZER = "tokenizer"  # a subfolder: the model folder's config.json is CTranslate2's own


def ctranslate2_model_dir(cache_dir: str, resolved: ResolvedModel, quantization: str) -> Path:
    """Where the CTranslate2 copy lives: ``<cache_dir>/<name>-ct2-<quantization>-<hash>``, next
    to the GGUF's converted copy. The hash covers what it was converted from (for a GGUF
    checkpoint, the converted copy's own hash-keyed folder), the quantization and
    CTranslate2's major version (whose model format later 4.x releases still read)."""
    import ctranslate2

    if resolved.gguf_file:
        origin = str(converted_model_dir(cache_dir, resolved).resolve())
        stem = converted_model_dir(cache_dir, resolved).name
    else:
        folder = Path(resolved.path)
        config = folder / "config.json"
        origin = (f"{folder.resolve()}|{config.stat().st_mtime_ns}" if config.is_file()
                  else resolved.path)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.name or resolved.name).strip("-.")
    major = ctranslate2.__version__.split(".")[0]
    digest = hashlib.sha256(f"{origin}|{quantization}|{major}".encode()).hexdigest()[:12]
    return Path(cache_dir).expanduser() / f"{stem or 'model'}-ct2-{quantization}-{digest}"


class CTranslate2Generator(LocalChatGenerator):
    """Generation with CTranslate2, through the model's own chat template.

    Lifecycle: ``warm_up()`` (synchronous; callers run it in a thread) resolves the model.
    The first start converts it: a GGUF checkpoint is first dequantized into the
    transformers copy ``TransformersGenerator`` uses (``converted_model_dir``, reused when
    there), which CTranslate2's converter turns into its own format, quantized to
    ``compute_type``, under ``cache_dir`` (``ctranslate2_model_dir``; built in a temporary
    folder and renamed into place, so concurrent replicas and crashes never leave half a
    copy). Later starts load that copy and the tokenizer saved with it, without torch.
    Unlike the transformers engine, this one needs a writable ``cache_dir``: a conversion
    that cannot be saved is a ``RuntimeError`` (the fallback chain answers instead).

    Device ``auto``: CUDA when CTranslate2 sees a GPU (its wheel brings its own CUDA
    runtime; torch here may be a CPU build), else CPU. ``compute_type`` ``auto``: int8 on
    CPU, int8_float16 on CUDA. ``torch_threads`` sets CTranslate2's ``intra_threads``.

    Decoding is ``generate_tokens`` in the worker thread, one token per step: the stream's
    first delta comes as soon as the prompt is read. Leaving the loop (consumer gone,
    ``stop`` set) ends CTranslate2's decoding. Concurrency, cancellation and token counting:
    see ``LocalChatGenerator``.
    """

    engine = "ctranslate2"
    _streamer_skips_prompt = False  # only new tokens reach the streamer

    def __init__(self, config) -> None:
        super().__init__(config)
        self._end_tokens: list[str] = []

    def _pick(self, ctranslate2) -> tuple[str, str]:
        cfg = self.backend_config
        gpus = ctranslate2.get_cuda_device_count()
        device = cfg.device if cfg.device != "auto" else ("cuda" if gpus > 0 else "cpu")
        if device == "cuda" and gpus == 0:
            raise RuntimeError("device 'cuda' requested but CTranslate2 sees no CUDA device")
        compute = cfg.compute_type
        if compute == "auto":
            compute = "int8_float16" if device == "cuda" else "int8"
        return device, compute

    def _load(self) -> None:
        try:
            import ctranslate2
        except ImportError as exc:  # pragma: no cover - a dependency of ragserve
            raise RuntimeError("engine 'ctranslate2' needs the ctranslate2 package "
                               "(or set engine: transformers)") from exc
        from transformers import AutoTokenizer

        cfg = self.backend_config
        device, compute = self._pick(ctranslate2)
        resolved = resolve_model(cfg.model, cfg.gguf_file)
        start = time.perf_counter()
        target = ctranslate2_model_dir(cfg.cache_dir, resolved, compute)
        source = "cache"
        if not (target / "model.bin").is_file():
            origin = self._transformers_copy(resolved)
            if not write_atomically(target, lambda tmp: self._convert(origin, tmp, compute),
                                    "model.bin"):
                raise RuntimeError(f"could not save the CTranslate2 copy in {target.parent}; "
                                   "engine 'ctranslate2' needs a writable cache_dir")
            source = "converted"
        meta = json.loads((target / _SOURCE).read_text())
        model = ctranslate2.Generator(str(target), device=device, compute_type=compute,
                                      intra_threads=cfg.torch_threads or 0, inter_threads=1)
        tokenizer = AutoTokenizer.from_pretrained(str(target / _TOKENIZER))
        self._eos_ids = set(meta["eos_token_ids"])
        self._end_tokens = tokenizer.convert_ids_to_tokens(sorted(self._eos_ids))
        self._model, self._tokenizer = model, tokenizer
        self._device, self._dtype = device, model.compute_type
        self._source, self._loaded_from = source, str(target)
        self._converted = str(target)
        self._load_s = round(time.perf_counter() - start, 3)
        log.info("generator loaded: %s with CTranslate2 (%s, %s) from %s (%s) in %.1fs",
                 cfg.model, device, model.compute_type, target, source, self._load_s)

    def _transformers_copy(self, resolved: ResolvedModel) -> str:
        """A folder (or hub name) CTranslate2's converter reads: for a GGUF checkpoint, the
        dequantized copy (made now when missing)."""
        if not resolved.gguf_file:
            return resolved.path
        folder = converted_model_dir(self.backend_config.cache_dir, resolved)
        if not (folder / "config.json").is_file():
            model, tokenizer = self._from_gguf(resolved)
            self._save_converted(model, tokenizer, folder, resolved)
            del model
        if not (folder / "config.json").is_file():
            raise RuntimeError(f"could not save the converted copy in {folder.parent}; "
                               "engine 'ctranslate2' needs a writable cache_dir")
        return str(folder)

    @staticmethod
    def _convert(origin: str, tmp: Path, quantization: str) -> None:
        import ctranslate2
        from transformers import AutoTokenizer, GenerationConfig

        ctranslate2.converters.TransformersConverter(origin, low_cpu_mem_usage=True).convert(
            str(tmp), quantization=quantization, force=True)
        tokenizer = AutoTokenizer.from_pretrained(origin)
        tokenizer.save_pretrained(tmp / _TOKENIZER)
        try:
            eos = GenerationConfig.from_pretrained(origin).eos_token_id
        except OSError:  # no generation_config.json: the tokenizer's end token
            eos = None
        if eos is None:
            eos = tokenizer.eos_token_id
        eos_ids = sorted(set(eos if isinstance(eos, list) else [eos]))
        (tmp / _SOURCE).write_text(json.dumps(
            {"origin": origin, "quantization": quantization, "eos_token_ids": eos_ids,
             "ctranslate2": ctranslate2.__version__}, indent=2))

    def _decode(self, prompt_ids: list[int], max_new: int, stop: threading.Event,
                streamer) -> list[int]:
        import numpy as np

        cfg = self.backend_config
        greedy = cfg.temperature == 0
        steps = self._model.generate_tokens(
            self._tokenizer.convert_ids_to_tokens(prompt_ids),
            max_length=max_new,
            sampling_topk=1 if greedy else 0,  # 0: the whole distribution
            sampling_temperature=1.0 if greedy else cfg.temperature,
            repetition_penalty=cfg.repetition_penalty,
            end_token=self._end_tokens,
        )
        new: list[int] = []
        try:
            for step in steps:
                new.append(step.token_id)
                streamer.put(np.asarray([step.token_id]))
                if stop.is_set() or len(new) >= max_new:
                    break
        finally:
            steps.close()  # ends CTranslate2's decoding when the loop was left early
        streamer.end()
        return new
