"""Cross-encoder scorer (sentence-transformers ``CrossEncoder``), any name or path."""

from __future__ import annotations

import logging
import threading

from ragserve.devices import pick_device
from ragserve.models import resolve_model
from ragserve.schemas import ScoredChunk

__all__ = ["CrossEncoderScorer"]

log = logging.getLogger("ragserve.reranker")


class CrossEncoderScorer:
    """Scores (query, passage) pairs with a cross-encoder; higher is more relevant.

    ``__init__`` only stores parameters; ``warm_up()`` loads the model and raises whatever the
    load raises (``load_scorer`` turns that into a fallback). Scoring is synchronous and
    thread-safe (one model call at a time). ``score_many`` scores several requests' candidates
    in ONE ``predict`` call (which sorts pairs by length and runs mini-batches of
    ``batch_size``), the unit the deployment's cross-request batching hands over.
    """

    def __init__(
        self, model: str, device: str = "auto", max_length: int = 512, *, batch_size: int = 32
    ) -> None:
        self.model_name = model
        self.device_requested = device
        self.max_length = max_length
        self.batch_size = batch_size
        self.name = f"cross-encoder:{model}"
        self._model = None
        self._device = "unloaded"
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        if self._model is not None:
            return
        from huggingface_hub import is_offline_mode, try_to_load_from_cache

        resolved = resolve_model(self.model_name)
        if (resolved.source == "hub" and is_offline_mode()
                and not isinstance(try_to_load_from_cache(resolved.path, "config.json"), str)):
            # Fail before importing torch: a replica that falls back then costs ~100 MiB, not
            # ~400 (the weight-free scorers need neither torch nor transformers).
            raise FileNotFoundError(
                f"{self.model_name!r} is not a local path, not bundled, not in the Hugging Face "
                "cache, and the hub is offline (HF_HUB_OFFLINE)")
        import torch
        from sentence_transformers import CrossEncoder

        device = pick_device(self.device_requested)
        kwargs = {
            "device": device,
            "max_length": self.max_length,
            "model_kwargs": {"dtype": torch.float16 if device == "cuda" else torch.float32},
        }
        if resolved.source != "hub" or is_offline_mode():
            model = CrossEncoder(resolved.path, local_files_only=True, **kwargs)
        else:
            # Cache first: without a network the hub client retries for ~45 s before failing.
            try:
                model = CrossEncoder(resolved.path, local_files_only=True, **kwargs)
            except OSError:
                model = CrossEncoder(resolved.path, **kwargs)
        model.eval()
        self._model, self._device = model, device
        log.info("cross-encoder loaded: %s from %s on %s", self.model_name, resolved.source, device)

    @property
    def device(self) -> str:
        return self._device

    def score(self, query: str, passages: list[ScoredChunk]) -> list[float]:
        return self.score_many([(query, passages)])[0]

    def score_many(self, groups: list[tuple[str, list[ScoredChunk]]]) -> list[list[float]]:
        if self._model is None:
            raise RuntimeError("cross-encoder not warmed up")
        pairs = [(query, p.text) for query, passages in groups for p in passages]
        if not pairs:
            return [[] for _ in groups]
        with self._lock:
            flat = self._model.predict(
                pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
            )
        flat = [float(s) for s in flat.reshape(len(pairs), -1)[:, 0]]
        out, start = [], 0
        for _, passages in groups:
            out.append(flat[start : start + len(passages)])
            start += len(passages)
        return out

    def health(self) -> dict:
        return {"backend": self.name, "device": self._device, "loaded": self._model is not None}
