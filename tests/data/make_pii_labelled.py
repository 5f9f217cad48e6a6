"""Writes tests/data/pii_labelled.jsonl: sentences with PII planted at known places.

Each line: {"text": ..., "entities": [{"type", "start", "end"}]}. Positives: e-mails, phone
numbers (US, UK, DE, FR, international), card numbers passing Luhn, IBANs with a valid mod-97
checksum, US SSNs in valid ranges, IPv4/IPv6. Hard negatives (not labelled, so a detection is a
false positive): card numbers failing Luhn, IBANs with a wrong checksum, SSNs in invalid ranges
(000, 666, 9xx area, 00 group), version strings, order numbers, dates. Deterministic (seed 14).
Run: .venv/bin/python tests/data/make_pii_labelled.py
"""

import json
import random
from pathlib import Path

rng = random.Random(14)


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def card(valid: bool) -> str:
    prefix = rng.choice(["4", "51", "52", "55", "37", "6011"])
    length = 15 if prefix == "37" else 16
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + rng.randint(1, 9)) % 10)
    num = body + check
    if rng.random() < 0.5 and length == 16:
        return " ".join(num[i:i + 4] for i in range(0, 16, 4))
    if rng.random() < 0.5 and length == 16:
        return "-".join(num[i:i + 4] for i in range(0, 16, 4))
    return num


def iban(valid: bool) -> str:
    country, bban_len = rng.choice([("DE", 18), ("GB", 18), ("FR", 23), ("NL", 14), ("ES", 20)])
    if country == "GB":
        bban = "WEST" + "".join(rng.choice("0123456789") for _ in range(14))
    elif country == "NL":
        bban = "ABNA" + "".join(rng.choice("0123456789") for _ in range(10))
    else:
        bban = "".join(rng.choice("0123456789") for _ in range(bban_len))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    if not valid:
        check = (check + rng.randint(1, 90)) % 97 + 2
    raw = f"{country}{check:02d}{bban}"
    return " ".join(raw[i:i + 4] for i in range(0, len(raw), 4)) if rng.random() < 0.5 else raw


def ssn(valid: bool) -> str:
    if valid:
        area = rng.choice([n for n in range(1, 900) if n != 666])
        group, serial = rng.randint(1, 99), rng.randint(1, 9999)
    else:
        area, group, serial = rng.choice([(0, 12, 3456), (666, 12, 3456), (912, 34, 5678),
                                          (123, 0, 4567), (234, 56, 0)])
        area = area if area else 0
    sep = rng.choice(["-", " "])
    return f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"


def email() -> str:
    user = rng.choice(["jane.doe", "j.smith", "ops-team", "billing+eu", "m.garcia42", "k_lee"])
    dom = rng.choice(["example.com", "acme.co.uk", "mail.example.org", "uni-bonn.de", "corp.io"])
    return f"{user}@{dom}"


def phone() -> str:
    return rng.choice([
        f"+1 415-555-{rng.randint(100, 9999):04d}", f"(212) 555-{rng.randint(1000, 9999)}",
        f"+44 20 7946 {rng.randint(1000, 9999)}", f"+49 30 {rng.randint(1000000, 9999999)}",
        f"+33 1 42 68 {rng.randint(10, 99)} {rng.randint(10, 99)}",
        f"415.555.{rng.randint(1000, 9999)}", f"+1 (646) 555-{rng.randint(1000, 9999)}"])


def ip() -> str:
    if rng.random() < 0.7:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    return f"2001:db8:{rng.randint(1, 0xffff):x}::{rng.randint(1, 0xffff):x}"


POS = {"EMAIL_ADDRESS": (email, ["Contact {} for access.", "Reply to {} before Friday.",
                                 "The owner is {}."]),
       "PHONE_NUMBER": (phone, ["Call {} after 9am.", "The support line is {}.",
                                "Phone: {}"]),
       "CREDIT_CARD": (lambda: card(True), ["Charged to card {} yesterday.",
                                            "Card number {} was declined."]),
       "IBAN_CODE": (lambda: iban(True), ["Wire the funds to {} by Monday.",
                                          "Account IBAN {} is on file."]),
       "US_SSN": (lambda: ssn(True), ["Her SSN is {} per the form.",
                                      "Social security number {} was verified."]),
       "IP_ADDRESS": (ip, ["The request came from {} at noon.", "Blocked host {} twice."])}

NEG = [lambda: f"Reference {card(False)} is an internal order number.",
       lambda: f"The transfer note says {iban(False)} (a typo).",
       lambda: f"Form field {ssn(False)} is a placeholder.",
       lambda: f"Upgrade to version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}.",
       lambda: f"Invoice {rng.randint(100000, 999999)} was paid on 2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}.",
       lambda: f"The batch size is {rng.randint(8, 512)} and we saw {rng.randint(1000, 99999)} rows.",
       lambda: "The model scored 0.87 on SciFact and 12.5 ms per query."]


def main() -> None:
    rows = []
    for etype, (make, templates) in POS.items():
        for _ in range(40):
            value = make()
            tpl = rng.choice(templates)
            text = tpl.format(value)
            start = tpl.index("{}")
            ents = [{"type": etype, "start": start, "end": start + len(value)}]
            if rng.random() < 0.5:  # a hard negative in the same text
                neg = rng.choice(NEG)()
                text = text + " " + neg
            rows.append({"text": text, "entities": ents})
    for _ in range(60):
        rows.append({"text": rng.choice(NEG)(), "entities": []})
    rng.shuffle(rows)
    out = Path(__file__).with_name("pii_labelled.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} rows -> {out}")


if __name__ == "__main__":
    main()
