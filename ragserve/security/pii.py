"""PII filtering with Presidio's pattern recognizers and its anonymizer, offline.

No NLP engine and no model: each entity has a pattern recognizer with a validator (Luhn for
cards, the mod-97 checksum for IBANs, ``phonenumbers`` for phones, the SSA's invalid ranges for
SSNs). Presidio's e-mail recognizer validates the domain with ``tldextract``, whose default
fetches the public suffix list from the network on first use; here it is given
``suffix_list_urls=()`` and no cache directory, so it uses the snapshot inside the wheel and
never reaches the network. Names and addresses need a NER model and are not detected.

Policies (``PiiConfig``, ``ingress.config.pii``): per entity type ``off`` / ``mask`` (all but
the last 4 characters become ``*``) / ``redact`` (``<EMAIL_ADDRESS>``) / ``hash``
(``<EMAIL_ADDRESS:hmac16>``, an HMAC-SHA256 under ``hash_key``: the same value gives the same
token, so documents stay joinable, and a low-entropy value such as an SSN cannot be guessed
back without the key). ``ingest`` applies to document text before chunking (the default
policy, or the tenant's own under ``tenants``); ``answers`` applies to generated answers before
they are returned, streamed ones included (``PiiFilteredService``).

Presidio is imported when the first filter is built, not at import time (spaCy comes with it
and takes seconds to import).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ragserve.security.config import SecretRef

__all__ = ["PII_ENTITIES", "PiiAction", "PiiPolicy", "PiiConfig", "PiiFilter", "Detection"]

PiiAction = Literal["off", "mask", "redact", "hash"]
PiiEntity = Literal["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN",
                    "IP_ADDRESS"]
PII_ENTITIES: tuple[str, ...] = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE",
                                 "US_SSN", "IP_ADDRESS")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class PiiPolicy(_Strict):
    """What to do with each entity type found in a text."""

    default: PiiAction = Field(
        default="off", description="Action for every entity type not listed in `entities`.")
    entities: dict[PiiEntity, PiiAction] = Field(
        default_factory=dict, description="Action per entity type (EMAIL_ADDRESS, "
        "PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, US_SSN, IP_ADDRESS), overriding `default`.")
    min_score: float = Field(
        default=0.4, ge=0, le=1, description="Least recognizer score acted on. Validated "
        "matches (Luhn, IBAN checksum, e-mail domain) score 1.0; phones 0.4; SSNs 0.5 in "
        "dashed/spaced form; undelimited 9-digit numbers 0.05 (ignored by default).")

    def action(self, entity: str) -> str:
        return self.entities.get(entity, self.default)  # type: ignore[arg-type]

    @property
    def active(self) -> dict[str, str]:
        """The entity types acted on, with their action."""
        return {e: self.action(e) for e in PII_ENTITIES if self.action(e) != "off"}


class PiiConfig(_Strict):
    """PII filtering (``ingress.config.pii``): at ingestion, per tenant, and on answers."""

    ingest: PiiPolicy = Field(
        default_factory=PiiPolicy, description="Applied to every ingested document's text "
        "before chunking (what is stored, embedded and later cited), for tenants not in "
        "`tenants`.")
    tenants: dict[str, PiiPolicy] = Field(
        default_factory=dict, description="Per-tenant ingestion policy (each tenant is its own "
        "collection of documents), replacing `ingest` for that tenant.")
    answers: PiiPolicy = Field(
        default_factory=PiiPolicy, description="Applied to generated answers before they are "
        "returned. Streamed answers: tokens are held back and sent filtered a sentence at a "
        "time (docs/security.md); the `done` event carries the whole answer filtered.")
    hash_key: SecretRef | None = Field(
        default=None, description="HMAC key of the `hash` action ({env: ...} or "
        "{file: ...}); required when any policy hashes.")
    phone_regions: list[str] = Field(
        default_factory=lambda: ["US", "GB", "DE", "FR", "IL", "IN", "CA", "BR"],
        description="Regions whose national phone formats are recognised (numbers in "
        "international +CC form are recognised whatever the region).")

    @model_validator(mode="after")
    def _hash_needs_key(self) -> "PiiConfig":
        policies = [self.ingest, self.answers, *self.tenants.values()]
        if self.hash_key is None and any("hash" in p.active.values() for p in policies):
            raise ValueError("pii: a policy uses `hash` but pii.hash_key is not set")
        return self

    @property
    def enabled(self) -> bool:
        return any(p.active for p in (self.ingest, self.answers, *self.tenants.values()))

    def answers_fingerprint(self) -> str:
        """Part of query-cache keys: "" when answers are not filtered (keys stay as before)."""
        if not self.answers.active:
            return ""
        blob = self.answers.model_dump_json()
        return ":pii-" + hashlib.sha256(blob.encode()).hexdigest()[:8]

    def ingest_policy(self, tenant: str) -> PiiPolicy:
        return self.tenants.get(tenant, self.ingest)


class Detection(BaseModel):
    entity_type: str
    start: int
    end: int
    score: float


def _offline_email_recognizer() -> Any:
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    # The suffix list bundled in the wheel; never fetched, never cached to disk.
    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return extract(pattern_text).fqdn != ""

    return OfflineEmailRecognizer()


class PiiFilter:
    """Detects the six entity types and applies a policy. Thread-safe; build once per
    replica (recognizers compile their patterns when built)."""

    def __init__(self, *, hash_key: str | None = None,
                 phone_regions: list[str] | tuple[str, ...] = ("US", "GB", "DE", "FR")) -> None:
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            UsSsnRecognizer,
        )
        from presidio_anonymizer import AnonymizerEngine

        self._recognizers = {
            "EMAIL_ADDRESS": _offline_email_recognizer(),
            "PHONE_NUMBER": PhoneRecognizer(supported_regions=tuple(phone_regions)),
            "CREDIT_CARD": CreditCardRecognizer(),
            "IBAN_CODE": IbanRecognizer(),
            "US_SSN": UsSsnRecognizer(),
            "IP_ADDRESS": IpRecognizer(),
        }
        self._anonymizer = AnonymizerEngine()
        self._hash_key = hash_key.encode() if hash_key else None

    @classmethod
    def from_config(cls, config: PiiConfig) -> "PiiFilter":
        key = config.hash_key.resolve() if config.hash_key is not None else None
        return cls(hash_key=key, phone_regions=config.phone_regions)

    def detect(self, text: str, entities: list[str] | tuple[str, ...] = PII_ENTITIES,
               min_score: float = 0.4) -> list[Detection]:
        """Non-overlapping detections at or above ``min_score`` (the longer, then the
        higher-scored, wins an overlap), in text order."""
        found = []
        for entity in entities:
            for r in self._recognizers[entity].analyze(text, [entity], None):
                if r.score >= min_score:
                    found.append(Detection(entity_type=entity, start=r.start, end=r.end,
                                           score=r.score))
        found.sort(key=lambda d: (-(d.end - d.start), -d.score, d.start))
        kept: list[Detection] = []
        for d in found:
            if all(d.end <= k.start or d.start >= k.end for k in kept):
                kept.append(d)
        return sorted(kept, key=lambda d: d.start)

    def apply(self, text: str, policy: PiiPolicy) -> str:
        """``text`` with the policy's entities masked, redacted or hashed."""
        active = policy.active
        if not active or not text:
            return text
        detections = self.detect(text, tuple(active), policy.min_score)
        if not detections:
            return text
        from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

        results = [RecognizerResult(d.entity_type, d.start, d.end, d.score) for d in detections]
        operators = {e: self._operator(e, a, OperatorConfig) for e, a in active.items()}
        return self._anonymizer.anonymize(text=text, analyzer_results=results,
                                          operators=operators).text

    def _operator(self, entity: str, action: str, operator_config: Any) -> Any:
        if action == "redact":
            return operator_config("replace", {"new_value": f"<{entity}>"})
        if action == "mask":
            return operator_config("custom", {"lambda": _mask})
        if self._hash_key is None:
            raise ValueError("pii: `hash` needs a hash_key")
        key = self._hash_key
        return operator_config("custom", {"lambda": lambda s: (
            f"<{entity}:" + hmac.new(key, s.encode(), hashlib.sha256).hexdigest()[:16] + ">")})


def _mask(value: str) -> str:
    keep = 4 if len(value) > 8 else 0
    return "*" * (len(value) - keep) + value[len(value) - keep:]
