"""The local model run by llama.cpp (``engine: llamacpp``): the GGUF checkpoint on llama.cpp's
quantised CPU kernels, requantized once to a type they read fast; no dequantised copy."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from ragserve.generation.local import LocalChatGenerator, converted_model_dir, write_atomically
from ragserve.models import ResolvedModel, resolve_model

__all__ = ["LlamaCppGenerator", "requantized_dir", "tokenizer_cache_dir"]

log = logging.getLogger("ragserve.generator")

_SOURCE = "ragserve-source.json"


def tokenizer_cache_dir(cache_dir: str, resolved: ResolvedModel) -> Path:
    """Where the GGUF's tokenizer, read once by transformers, is kept as a tokenizer folder:
    ``<cache_dir>/<name>-<hash>-tokenizer``, keyed like the converted copy (file and size)."""
    base = converted_model_dir(cache_dir, resolved)
    return base.with_name(f"{base.name}-tokenizer")


def requantized_dir(cache_dir: str, resolved: ResolvedModel, weights: str) -> Path:
    """Where the GGUF requantized to ``weights`` is kept: ``<cache_dir>/<name>-<hash>-<type>``
    holding ``model.gguf``, keyed like the converted copy (file and size)."""
    base = converted_model_dir(cache_dir, resolved)
    return base.with_name(f"{base.name}-{weights.lower()}")


_FTYPES = {"Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
           "F16": "LLAMA_FTYPE_MOSTLY_F16"}


class LlamaCppGenerator(LocalChatGenerator):
    """Generation with llama.cpp (``llama-cpp-python``) from the GGUF checkpoint.

    The weights run on llama.cpp's quantised CPU kernels, in the type ``gguf_weights`` names:
    the first start requantizes the file once into ``cache_dir`` (``requantized_dir``; under a
    second for a 135M model, written atomically), because llama.cpp reads prompts with fast
    matrix kernels for Q4_0, Q8_0 and F16 but not for Q4_1, the bundled file's type; ``file``
    runs the file as it is. Nothing is dequantised into a transformers copy. The prompt is
    the model's own chat template applied by its transformers tokenizer (the same text and
    token ids as the other engines, exact token counts); the tokenizer is read from the GGUF
    once and kept under ``cache_dir`` (``tokenizer_cache_dir``; without a writable cache it is
    read again next start). GGUF token ids are the tokenizer's: the ids go to llama.cpp as
    they are.

    ``torch_threads`` sets llama.cpp's threads (prompt and decode); default: all cores.
    ``device`` ``auto`` offloads every layer to the GPU when the installed llama.cpp was built
    with GPU support, else runs on CPU; ``cuda`` without such a build is an error. Greedy at
    temperature 0; ``repetition_penalty`` is llama.cpp's repeat penalty over the last 64
    generated tokens (CTranslate2 and transformers count the prompt too). Successive prompts
    that share a beginning (the system message) reuse its cached keys and values.

    Decoding runs one token per step in the worker thread; leaving the loop (consumer gone,
    ``stop`` set) ends it. Concurrency, cancellation and token counting: ``LocalChatGenerator``.
    """

    engine = "llamacpp"
    _streamer_skips_prompt = False  # only new tokens reach the streamer

    def _pick_device(self, llama_cpp) -> str:
        wanted = self.backend_config.device
        gpu = bool(llama_cpp.llama_supports_gpu_offload())
        if wanted == "cuda" and not gpu:
            raise RuntimeError("device 'cuda' requested but the installed llama-cpp-python "
                               "was built without GPU support")
        return "cuda" if wanted != "cpu" and gpu else "cpu"

    def _load(self) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise RuntimeError(
                "engine 'llamacpp' needs llama-cpp-python (pip install 'ragserve[llamacpp]'; "
                "it compiles llama.cpp) or set engine: ctranslate2") from exc

        # llama.cpp logs through this logger: its warnings and errors, not a line per tensor
        logging.getLogger("llama-cpp-python").setLevel(logging.WARNING)
        cfg = self.backend_config
        resolved = resolve_model(cfg.model, cfg.gguf_file)
        if not resolved.gguf_file:
            raise RuntimeError(f"engine 'llamacpp' runs GGUF checkpoints; {cfg.model!r} is not "
                               "one (use engine: ctranslate2 or transformers)")
        start = time.perf_counter()
        device = self._pick_device(llama_cpp)
        threads = cfg.torch_threads or os.cpu_count() or 1
        gguf, weights_cached = self._weights(llama_cpp, resolved)
        # flash attention: the prompt's attention in one fused kernel (~1.3x faster prompts
        # on 2 cores, docs/benchmarks/generation-cpu.md)
        model = llama_cpp.Llama(
            model_path=gguf, n_ctx=cfg.context_window, n_batch=512, flash_attn=True,
            n_threads=threads, n_threads_batch=threads,
            n_gpu_layers=-1 if device == "cuda" else 0, verbose=False)
        tokenizer, tokenizer_cached = self._tokenizer_for(resolved)
        self._eos_ids = {model.token_eos()} | self._tokenizer_eos(tokenizer)
        self._model, self._tokenizer = model, tokenizer
        self._device = device
        self._dtype = _file_type(model)
        # "cache": nothing read from the checkpoint but its weights' cached copy
        self._source = "cache" if weights_cached and tokenizer_cached else "gguf"
        self._loaded_from = gguf
        self._load_s = round(time.perf_counter() - start, 3)
        log.info("generator loaded: %s with llama.cpp (%s, %s, %d threads) from %s in %.1fs",
                 cfg.model, device, self._dtype, threads, gguf, self._load_s)

    def _weights(self, llama_cpp, resolved: ResolvedModel) -> tuple[str, bool]:
        """The GGUF file to run — the checkpoint itself (``file``), or its copy requantized to
        ``gguf_weights``, made now when missing — and whether that copy was there already."""
        import ctypes

        original = str(Path(resolved.path) / resolved.gguf_file)
        weights = self.backend_config.gguf_weights
        if weights == "file":
            return original, False
        folder = requantized_dir(self.backend_config.cache_dir, resolved, weights)
        target = folder / "model.gguf"
        if target.is_file():
            return str(target), True

        def write(tmp: Path) -> None:
            tmp.mkdir(parents=True)
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = getattr(llama_cpp, _FTYPES[weights])
            params.allow_requantize = True  # the source is quantized already
            params.nthread = self.backend_config.torch_threads or 0
            start = time.perf_counter()
            rc = llama_cpp.llama_model_quantize(
                original.encode(), str(tmp / "model.gguf").encode(), ctypes.byref(params))
            if rc != 0:
                raise RuntimeError(f"llama.cpp could not requantize {original} to {weights}")
            (tmp / _SOURCE).write_text(json.dumps(
                {"origin": original, "weights": weights, "llama_cpp": llama_cpp.__version__,
                 "seconds": round(time.perf_counter() - start, 2)}, indent=2))

        if not write_atomically(folder, write, "model.gguf"):
            raise RuntimeError(f"could not save the {weights} copy in {folder.parent}; engine "
                               "'llamacpp' needs a writable cache_dir (or gguf_weights: file)")
        return str(target), False

    def _tokenizer_for(self, resolved: ResolvedModel):
        """The GGUF's tokenizer — from the cache when there, else read from the file (seconds)
        and saved there for the next start — and whether it came from the cache."""
        from transformers import AutoTokenizer

        folder = tokenizer_cache_dir(self.backend_config.cache_dir, resolved)
        if (folder / _SOURCE).is_file():
            return AutoTokenizer.from_pretrained(str(folder)), True
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, gguf_file=resolved.gguf_file)

        def write(tmp: Path) -> None:
            tokenizer.save_pretrained(tmp)
            (tmp / _SOURCE).write_text(json.dumps(
                {"path": resolved.path, "gguf_file": resolved.gguf_file,
                 "source": resolved.source}, indent=2))

        write_atomically(folder, write, _SOURCE)
        return tokenizer, False

    @staticmethod
    def _tokenizer_eos(tokenizer) -> set[int]:
        ids = tokenizer.eos_token_id
        return set(ids if isinstance(ids, list) else [ids]) - {None}

    def _decode(self, prompt_ids: list[int], max_new: int, stop: threading.Event,
                streamer) -> list[int]:
        import numpy as np

        cfg = self.backend_config
        greedy = cfg.temperature == 0
        steps = self._model.generate(
            prompt_ids,
            temp=0.0 if greedy else cfg.temperature,
            top_k=0, top_p=1.0, min_p=0.0,  # plain sampling from the whole distribution
            repeat_penalty=cfg.repetition_penalty,
        )
        new: list[int] = []
        try:
            for token in steps:
                new.append(int(token))
                streamer.put(np.asarray([token]))
                if token in self._eos_ids or stop.is_set() or len(new) >= max_new:
                    break
        finally:
            steps.close()
        streamer.end()
        return new


def _file_type(model) -> str:
    """The GGUF's weight type as llama.cpp names it (``Q4_1``), for ``health``."""
    meta = getattr(model, "metadata", None) or {}
    kind = meta.get("general.file_type")
    names = {"0": "F32", "1": "F16", "2": "Q4_0", "3": "Q4_1", "7": "Q8_0", "8": "Q5_0",
             "9": "Q5_1", "15": "Q4_K_M", "17": "Q5_K_M", "18": "Q6_K"}
    return names.get(str(kind), f"gguf:{kind}" if kind is not None else "gguf")
