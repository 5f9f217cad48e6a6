"""Which device a model runs on: one rule for every stage that loads weights."""

from __future__ import annotations

__all__ = ["pick_device"]


def pick_device(requested: str) -> str:
    """``"auto"`` → ``"cuda"`` when a CUDA device is visible, else ``"cpu"``; any other value is
    returned as given. Raises ``RuntimeError`` when ``"cuda"`` is requested but none is visible.

    Imports torch on call, not at import: stages whose models fall back without loading weights
    never pay for it."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is visible")
    return requested
