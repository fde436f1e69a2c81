"""Headline files (JSON, JSONL, CSV) for offline days, backfills and tests.

Each record needs a text (``text``/``title``/``headline``) and a link
(``link``/``url``); ``source``, ``published`` and ``category`` are optional. A
file that cannot be read as a whole fails with the reason; a bad record is
skipped and counted, so one typo never costs the rest of the file.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from varro.headlines.items import CATEGORIES, Category, RawItem, SourceRead

SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
TEXT_KEYS = ("text", "title", "headline")
LINK_KEYS = ("link", "url")
TIME_KEYS = ("published", "published_at", "pubDate", "date", "time")
_DATED_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")


def read_file(path: Path, *, category: Category = "markets") -> SourceRead:
    """Read one headline file; `category` applies to records that do not name theirs."""
    name = path.name
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        return SourceRead.failed(name, category, f"unsupported file type {path.suffix!r}: use .json, .jsonl or .csv")
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        return SourceRead.failed(name, category, f"file not found: {path}")
    except OSError as exc:
        return SourceRead.failed(name, category, f"cannot read {path}: {exc.strerror or exc}")
    try:
        text = payload.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return SourceRead.failed(
            name, category, f"not UTF-8 text: byte 0x{payload[exc.start]:02x} at offset {exc.start}", payload
        )
    read = SourceRead(name=name, category=category, payload=payload, date_hint=date_hint(path))
    if kind == "csv":
        records = _csv_records(text, read)
    elif kind == "json":
        records = _json_records(text, read)
    else:
        records = _jsonl_records(text, read)
    if read.status == "failed":
        return read
    for record in records:
        item = _item(record, category)
        if isinstance(item, str):
            read.skipped[item] += 1
        else:
            read.items.append(item)
    return read


def _json_records(text: str, read: SourceRead) -> list[object]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(read, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
        return []
    if isinstance(data, dict):
        data = data.get("headlines", data.get("items"))
    if not isinstance(data, list):
        _fail(read, 'JSON must be a list of headline objects or {"headlines": [...]}')
        return []
    return data


def _jsonl_records(text: str, read: SourceRead) -> list[object]:
    records: list[object] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            read.skipped["unreadable JSON line"] += 1
    return records


def _csv_records(text: str, read: SourceRead) -> list[object]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [keys[0] for keys in (TEXT_KEYS, LINK_KEYS) if not any(k in columns for k in keys)]
    if missing:
        _fail(read, f"CSV is missing column(s) {', '.join(missing)} (has: {', '.join(columns) or 'no header'})")
        return []
    try:
        return [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    except csv.Error as exc:
        _fail(read, f"unreadable CSV at line {reader.line_num}: {exc}")
        return []


def _fail(read: SourceRead, error: str) -> None:
    read.status = "failed"
    read.error = error


def _item(record: object, default_category: Category) -> RawItem | str:
    """A RawItem, or the reason the record is skipped."""
    if not isinstance(record, dict):
        return "record is not an object"
    category = _first(record, ("category",)) or default_category
    if category not in CATEGORIES:
        return f"unknown category {category[:20]!r}"
    published = next((record[k] for k in TIME_KEYS if record.get(k) not in (None, "")), None)
    return RawItem(
        title=_first(record, TEXT_KEYS),
        link=_first(record, LINK_KEYS),
        published=published,
        source=_first(record, ("source",)),
        category=category,
    )


def _first(record: dict, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def date_hint(path: Path) -> str | None:
    found = _DATED_NAME.search(path.stem)
    return found.group(1) if found else None
