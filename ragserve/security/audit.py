"""The audit log of retrievals: who (key id, tenant) was given which chunk ids, when.

One JSON object per line, written by the ``ragserve.audit`` logger, which does not propagate to
the service log; with ``path`` set, to that file as well. Records hold ids only — never a
query, a passage or a key."""

from __future__ import annotations

import json
import logging
import time
from typing import Iterable

from ragserve.security.access import current_principal
from ragserve.security.config import AuditConfig

__all__ = ["AuditLog", "AUDIT_LOGGER"]

AUDIT_LOGGER = "ragserve.audit"


class AuditLog:
    def __init__(self, config: AuditConfig | None = None) -> None:
        self.config = config or AuditConfig()
        self.log = logging.getLogger(AUDIT_LOGGER)
        self.log.propagate = False
        self.log.setLevel(logging.INFO)
        if self.config.path and not any(getattr(h, "_ragserve_audit", False)
                                        for h in self.log.handlers):
            handler = logging.FileHandler(self.config.path, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(message)s"))
            handler._ragserve_audit = True  # type: ignore[attr-defined]
            self.log.addHandler(handler)

    def record(self, operation: str, chunk_ids: Iterable[str], doc_ids: Iterable[str] = ()) -> None:
        if not self.config.enabled:
            return
        principal = current_principal()
        entry = {
            "ts": round(time.time(), 3),
            "operation": operation,
            "key_id": principal.key_id if principal else None,
            "tenant": principal.tenant if principal else None,
            "chunk_ids": list(chunk_ids),
        }
        docs = sorted(set(doc_ids))
        if docs:
            entry["doc_ids"] = docs
        self.log.info(json.dumps(entry, separators=(",", ":")))
