"""Input sanitising and privacy-safe identifiers for logs."""

from __future__ import annotations

import hashlib
import re
import unicodedata

__all__ = ["sanitize_query", "clean_text", "query_fingerprint"]

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\r\f\v]+")


def sanitize_query(text: str) -> str:
    """NFC-normalise, drop control characters, collapse runs of spaces, strip."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    text = _SPACES.sub(" ", text)
    return text.strip()


def clean_text(text: str) -> str:
    """A document's text as stored: NFC-normalised, control characters replaced by spaces as
    in queries (tab, newline and carriage return kept: they shape code and prose); spacing
    otherwise untouched."""
    return _CONTROL.sub(" ", unicodedata.normalize("NFC", text))


def query_fingerprint(text: str) -> str:
    """What logs carry instead of a query: a short hash (raw queries are never logged)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
