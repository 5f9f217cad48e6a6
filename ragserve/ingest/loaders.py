"""Read files and folders into :class:`~ragserve.schemas.DocumentIn` for ingestion.

Content type by extension (simple on purpose; pass documents yourself for anything finer):

======================  ===========  ==============================================
extension               type         text
======================  ===========  ==============================================
.md .markdown .rst      technical    the file
.yaml .yml              technical    the file
.txt                    general      the file
.py                     code         the file
.json                   technical    pretty-printed JSON, or one document per record
.jsonl                  technical    one document per record (line)
======================  ===========  ==============================================

A *record* is a JSON object with a string ``"text"`` (BEIR corpus style:
``{"_id", "title", "text"}``). A ``.json`` file holding a list of records, and every line of
a ``.jsonl`` file, become one document per record: its id is the record's ``_id`` (or ``id``)
as is, else ``<path>:<line or index>``; a non-empty ``title`` is put before the text (as BEIR
evaluations do) and into the metadata.

Ids: a file's document id is its path relative to ``root`` in POSIX form. Without ``root``,
that is the current directory when the file lies under it, else the parent of the path
argument the file was found through. Characters outside ``[A-Za-z0-9._:/@+-]`` become ``_``
(and ``doc`` is put in front of an id that would not start with a letter or digit); ids
longer than 256 characters are shortened with a hash suffix. The first of two documents with
the same id wins; the other is skipped with a warning.

Metadata: ``{"source": <relative path>, "title": <first heading or file name>}``.

Skipped with a warning, never an exception: hidden files and folders (``.git``, ``.env``…)
found while walking, ``.venv``/``venv``/``__pycache__``/``node_modules``, files over
``max_bytes`` (2 MB; ``.jsonl`` files are streamed, the limit applies to each record),
binary or non-UTF-8 files, invalid JSON, empty files. A path given explicitly is read even
if it is hidden.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ragserve.schemas import ContentType, DocumentIn

__all__ = [
    "CONTENT_TYPES",
    "MAX_FILE_BYTES",
    "SKIPPED_DIRS",
    "load_documents",
    "iter_files",
    "sanitize_doc_id",
]

logger = logging.getLogger(__name__)

CONTENT_TYPES: dict[str, ContentType] = {
    ".md": ContentType.technical,
    ".markdown": ContentType.technical,
    ".rst": ContentType.technical,
    ".yaml": ContentType.technical,
    ".yml": ContentType.technical,
    ".txt": ContentType.general,
    ".py": ContentType.code,
    ".json": ContentType.technical,
    ".jsonl": ContentType.technical,
}
MAX_FILE_BYTES = 2_000_000  # matches the service's default max_document_chars
SKIPPED_DIRS = frozenset({".venv", "venv", "__pycache__", "node_modules"})

_MAX_ID = 256
# (document id, text, content type, title) before validation into DocumentIn
_Loaded = tuple[str, str, ContentType, str]
_DISALLOWED = re.compile(r"[^A-Za-z0-9._:/@+-]")
_MD_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_RST_TITLE = re.compile(r"^(?![ \t])(\S[^\n]*)\n([=\-~^\"'`#*+])\2{2,}[ \t]*$", re.MULTILINE)


def sanitize_doc_id(raw: str) -> str:
    """Make ``raw`` match the DocumentIn id pattern: ``[A-Za-z0-9][A-Za-z0-9._:/@+-]*``."""
    clean = _DISALLOWED.sub("_", raw.strip()) or "doc"
    if not clean[0].isascii() or not clean[0].isalnum():
        clean = "doc" + clean
    if len(clean) > _MAX_ID:
        suffix = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        clean = f"{clean[: _MAX_ID - 17]}+{suffix}"
    return clean


def iter_files(paths: Iterable[Path]) -> Iterator[tuple[Path, Path]]:
    """``(file, argument it was found through)`` for every loadable file, in sorted order."""
    for arg in paths:
        arg = Path(arg)
        if arg.is_file():
            if arg.suffix.lower() in CONTENT_TYPES:
                yield arg, arg
            else:
                logger.warning("skipping %s: unsupported file type", arg)
        elif arg.is_dir():
            for folder, dirs, files in os.walk(arg):
                dirs[:] = sorted(d for d in dirs if not _skipped_dir(d))
                for name in sorted(files):
                    path = Path(folder) / name
                    if not name.startswith(".") and path.suffix.lower() in CONTENT_TYPES:
                        yield path, arg
        else:
            logger.warning("skipping %s: no such file or folder", arg)


def load_documents(
    paths: list[Path], *, root: Path | None = None, max_bytes: int = MAX_FILE_BYTES
) -> Iterator[DocumentIn]:
    """Documents from files and folders (see the module docstring for types, ids, skips)."""
    seen: set[str] = set()
    cwd = Path.cwd().resolve()
    for path, arg in iter_files(paths):
        rel = _relative(path, arg, root, cwd)
        try:
            for doc_id, text, kind, title in _load_file(path, rel, max_bytes):
                if doc_id in seen:
                    logger.warning("skipping %s: document id %r already used", rel, doc_id)
                    continue
                try:
                    doc = DocumentIn(
                        id=doc_id,
                        text=text,
                        content_type=kind,
                        metadata={"source": rel, "title": title},
                    )
                except ValidationError as exc:
                    logger.warning("skipping %s (%s): %s", rel, doc_id, exc)
                    continue
                seen.add(doc_id)
                yield doc
        except OSError as exc:
            logger.warning("skipping %s: %s", path, exc)


def _skipped_dir(name: str) -> bool:
    return name.startswith(".") or name in SKIPPED_DIRS


def _relative(path: Path, arg: Path, root: Path | None, cwd: Path) -> str:
    resolved = path.resolve()
    bases = [Path(root).resolve()] if root is not None else [cwd, arg.resolve().parent]
    for base in bases:
        try:
            return resolved.relative_to(base).as_posix()
        except ValueError:
            continue
    return path.name  # outside root: the name is the best stable id left


def _load_file(path: Path, rel: str, max_bytes: int) -> Iterator[_Loaded]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _load_jsonl(path, rel, max_bytes)
        return
    size = path.stat().st_size
    if size > max_bytes:
        logger.warning("skipping %s: %d bytes is over the %d byte limit", rel, size, max_bytes)
        return
    text = _decode(path.read_bytes(), rel)
    if text is None:
        return
    if suffix == ".json":
        yield from _load_json(text, rel)
        return
    if not text.strip():
        logger.info("skipping %s: empty", rel)
        return
    yield sanitize_doc_id(rel), text, CONTENT_TYPES[suffix], _title(text, path)


def _decode(data: bytes, rel: str) -> str | None:
    if b"\x00" in data[:8192]:
        logger.warning("skipping %s: binary file", rel)
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        logger.warning("skipping %s: not UTF-8 text", rel)
        return None


def _load_json(text: str, rel: str) -> Iterator[_Loaded]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        logger.warning("skipping %s: invalid JSON (%s)", rel, exc)
        return
    if isinstance(value, list) and value and all(_is_record(v) for v in value):
        for index, record in enumerate(value):
            doc = _record(record, rel, f"{rel}:{index}")
            if doc is not None:
                yield doc
        return
    pretty = json.dumps(value, indent=2, ensure_ascii=False)
    if not pretty.strip() or value in ({}, [], "", None):
        logger.info("skipping %s: empty JSON", rel)
        return
    yield sanitize_doc_id(rel), pretty, ContentType.technical, Path(rel).name


def _load_jsonl(path: Path, rel: str, max_bytes: int) -> Iterator[_Loaded]:
    with path.open("rb") as fh:
        head = fh.read(8192)
        if b"\x00" in head:
            logger.warning("skipping %s: binary file", rel)
            return
        fh.seek(0)
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{rel}:{number}"
            if len(raw) > max_bytes:
                logger.warning("skipping %s: record over the %d byte limit", where, max_bytes)
                continue
            try:
                record = json.loads(raw.decode("utf-8-sig"))
            except (UnicodeDecodeError, ValueError) as exc:
                logger.warning("skipping %s: invalid JSON line (%s)", where, exc)
                continue
            if not _is_record(record):
                logger.warning("skipping %s: not an object with a string 'text'", where)
                continue
            doc = _record(record, rel, where)
            if doc is not None:
                yield doc


def _is_record(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("text"), str)


def _record(record: dict[str, Any], rel: str, fallback_id: str) -> _Loaded | None:
    raw_id = record.get("_id", record.get("id"))
    doc_id = sanitize_doc_id(str(raw_id) if isinstance(raw_id, (str, int)) else fallback_id)
    title = record.get("title")
    title = title.strip() if isinstance(title, str) else ""
    body = record["text"]
    text = f"{title}\n\n{body}" if title and body.strip() else (body if body.strip() else title)
    if not text:
        logger.info("skipping %s: empty record", fallback_id)
        return None
    return doc_id, text, ContentType.technical, title or doc_id


def _title(text: str, path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in {".md", ".markdown", ".txt"}:
        match = _MD_HEADING.search(text)
        if match:
            return match.group(1).strip()
    elif suffix == ".rst":
        match = _RST_TITLE.search(text)
        if match and len(match.group(1).strip()) <= len(match.group(0).splitlines()[1]):
            return match.group(1).strip()
    return path.name
