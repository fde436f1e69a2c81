"""Headline files (JSON, JSONL, CSV) for offline days, backfills and tests.

Each record needs a text (``text``/``title``/``headline``) and a link
(``link``/``url``); ``source``, ``published`` and ``category`` are optional. A
file that cannot be read as a whole (missing, over `max_bytes`, no usable
header, a JSON document whose brackets or commas cannot be followed) fails with
the reason; a bad record (unreadable JSON, a lone surrogate, a 5000-digit
number, nesting too deep, an unreadable date, an unbalanced CSV quote, an
oversized CSV record) is skipped and counted under a reason that names its
line (and, in a .json document, its record number), so one typo never costs the rest.

JSONL and CSV are streamed: read record by record from the open file, hashed on
the way, so memory holds one bounded record (a JSONL line up to `max_record_bytes`,
a CSV record up to CSV_RECORD_CHARS; a longer one is stepped over in chunks and
counted by its line) besides the items kept, whatever the file's size; the raw
bytes stay in the file (`FilePayload`) and the fetch job copies them into the
store by streaming. A .json document is read whole (bounded by `max_bytes`): its
records are placed by walking the text, which the stdlib cannot do on a stream.
`max_bytes` (headlines.max_file_bytes) still bounds every format: for a streamed
file it bounds the import's time and the number of items kept.

A file is read once: the parsed read is kept (a few files, keyed by path, size,
mtime and inode) so importing a file's twenty days in one process (`varro headlines
import`) parses it once, not twenty times.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import itertools
import json
import os
import re
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator
from pathlib import Path

from varro.headlines.items import CATEGORIES, Category, FilePayload, RawItem, SourceRead
from varro.headlines.normalize import to_utc_iso

SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
TEXT_KEYS = ("text", "title", "headline")
LINK_KEYS = ("link", "url")
TIME_KEYS = ("published", "published_at", "pubDate", "date", "time")
DEFAULT_MAX_BYTES = 64_000_000
DEFAULT_MAX_RECORD_BYTES = 10_000_000
_CHUNK = 1 << 16
# One CSV record may span a few lines (a quoted newline) and this many characters; beyond, its quote is unterminated.
CSV_RECORD_LINES = 20
CSV_RECORD_CHARS = 100_000
_MAX_DIGITS = 100  # an integer longer than this is no timestamp, and int() refuses 4300+ digits anyway
_LINES_NAMED = 5
_DATED_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
_CACHE: OrderedDict[tuple, SourceRead] = OrderedDict()
_CACHE_FILES = 4


class _Unreadable:
    """Stands in for a JSON number too long to be anything we read."""


def _parse_int(digits: str) -> int | _Unreadable:
    return int(digits) if len(digits) <= _MAX_DIGITS else _Unreadable()


def read_file(
    path: Path,
    *,
    category: Category = "markets",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> SourceRead:
    """Read one headline file; `category` applies to records that do not name theirs.

    A JSONL line longer than `max_record_bytes` is skipped and counted without being held
    in memory; a CSV record is bounded by CSV_RECORD_CHARS the same way.
    """
    name = path.name
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        return SourceRead.failed(name, category, f"unsupported file type {path.suffix!r}: use .json, .jsonl or .csv")
    try:
        with open(path, "rb", buffering=0) as handle:
            stat = os.fstat(handle.fileno())
            if stat.st_size > max_bytes:
                return SourceRead.failed(
                    name, category, f"file is {stat.st_size:,} bytes, over headlines.max_file_bytes={max_bytes:,}"
                )
            key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, category, max_record_bytes)
            if key in _CACHE:
                _CACHE.move_to_end(key)
                return _copy(_CACHE[key])
            stream = _HashingReader(handle, max_bytes)
            try:
                read = _parse(stream, kind, name, category, date_hint(path), max_record_bytes)
                stream.drain()  # a file failed part-way is still recorded whole, under its own hash
            except _FileGrew:
                return SourceRead.failed(name, category, f"file is over headlines.max_file_bytes={max_bytes:,}")
    except FileNotFoundError:
        return SourceRead.failed(name, category, f"file not found: {path}")
    except OSError as exc:
        return SourceRead.failed(name, category, f"cannot read {path}: {exc.strerror or exc}")
    if read.payload is None:  # streamed: the bytes stay in the file, named by what was read there
        read.payload = FilePayload(path=path, sha256=stream.sha256.hexdigest(), size=stream.size)
    _CACHE[key] = read
    while len(_CACHE) > _CACHE_FILES:
        _CACHE.popitem(last=False)
    return _copy(read)


class _FileGrew(Exception):
    """The file passed headlines.max_file_bytes while being read (it grew after its size was checked)."""


class _HashingReader(io.RawIOBase):
    """The file's bytes as they are read, hashed and counted on the way, refused past `limit`."""

    def __init__(self, raw: io.RawIOBase, limit: int) -> None:
        self.raw, self.limit = raw, limit
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer) or 0
        self.size += n
        if self.size > self.limit:
            raise _FileGrew
        self.sha256.update(memoryview(buffer)[:n])
        return n

    def drain(self) -> None:
        chunk = bytearray(_CHUNK)
        while self.readinto(chunk):
            pass


def _copy(read: SourceRead) -> SourceRead:
    """A read the caller may rename or count on; the (never mutated) item list is shared."""
    fresh = copy.copy(read)
    fresh.skipped = Counter(read.skipped)
    return fresh


def _parse(
    stream: io.RawIOBase, kind: str, name: str, category: Category, hint: str | None, max_record_bytes: int
) -> SourceRead:
    """The file's records into items. JSONL and CSV are read record by record from `stream`, so
    memory holds one bounded record at a time besides the items; a JSON document is read whole."""
    read = SourceRead(name=name, category=category, date_hint=hint)
    skips = _Skips()
    buffered = io.BufferedReader(stream, _CHUNK)
    if kind == "jsonl":
        records = _jsonl_records(buffered, max_record_bytes, skips)
    elif kind == "csv":
        records = _csv_records(buffered, read, skips)
    else:
        payload = buffered.read()
        read.payload = payload
        try:
            text = payload.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return SourceRead.failed(
                name, category, f"not UTF-8 text: byte 0x{payload[exc.start]:02x} at offset {exc.start}", payload
            )
        # a JSON document may still fail part-way (its structure broken after some records): read it whole first
        records = iter(list(_json_records(text, read, skips)))
    for where, record in records:
        item = _item(record, category)
        if isinstance(item, str):
            skips.add(item, where)
        else:
            read.items.append(item)
    if read.status == "failed":
        read.items = []
        return read
    skips.into(read)
    read.by_day = {}
    for position, item in enumerate(read.items):
        read.by_day.setdefault(item.published[:10] if item.published else None, []).append(position)
    return read


class _Skips:
    """Skipped records per reason, with the first few places, so a report says where to look."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.where: dict[str, list[str]] = {}

    def add(self, reason: str, where: str) -> None:
        self.count[reason] += 1
        places = self.where.setdefault(reason, [])
        if len(places) < _LINES_NAMED:
            places.append(where)

    def into(self, read: SourceRead) -> None:
        for reason, n in self.count.items():
            places = self.where[reason]
            more = f" and {n - len(places)} more" if n > len(places) else ""
            read.skipped[f"{reason} ({', '.join(places)}{more})"] += n


def _json_records(text: str, read: SourceRead, skips: _Skips) -> Iterator[tuple[str, object]]:
    """The records of a JSON document (a list, or an object whose "headlines" or "items" is one),
    each parsed on its own: a record nested too deeply or unreadable inside its brackets is skipped
    and placed; only a document whose structure cannot be followed fails the file."""
    pos = _space(text, 0)
    top_level = text.startswith("[", pos)
    if text.startswith("{", pos):
        pos = _record_list(text, pos, read)
        if pos is None:
            return
    elif not text.startswith("[", pos):
        _fail(read, 'JSON must be a list of headline objects or {"headlines": [...]}')
        return
    lines = _LineCounter(text)
    pos = _space(text, pos + 1)
    number = 0
    while not text.startswith("]", pos):
        number += 1
        where = f"record {number} at line {lines.at(pos)}"
        try:
            record, end = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError) as exc:
            end = _value_end(text, pos)
            if end is None:
                _fail(read, _json_problem(exc, text, pos))
                return
            skips.add("JSON nested too deeply" if isinstance(exc, RecursionError) else "unreadable JSON record", where)
        else:
            yield where, record
        pos = _space(text, end)
        if text.startswith(",", pos):
            pos = _space(text, pos + 1)
        elif not text.startswith("]", pos):
            _fail(read, f"invalid JSON at line {lines.at(pos)}: expected ',' or ']' after record {number}")
            return
    if top_level and _space(text, pos + 1) < len(text):
        _fail(read, f"invalid JSON at line {lines.at(_space(text, pos + 1))}: extra data after the list")


def _record_list(text: str, pos: int, read: SourceRead) -> int | None:
    """Where the record list of a ``{"headlines": [...]}`` document starts (its "["); the other
    members are stepped over unparsed, so a deep one elsewhere costs nothing. None: failed."""
    found: dict[str, int] = {}
    pos = _space(text, pos + 1)
    while not text.startswith("}", pos):
        try:
            key, pos = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError) as exc:
            _fail(read, _json_problem(exc, text, pos))
            return None
        pos = _space(text, pos)
        if not isinstance(key, str) or not text.startswith(":", pos):
            _fail(read, f"invalid JSON at line {text.count(chr(10), 0, pos) + 1}: expected a member name and ':'")
            return None
        pos = _space(text, pos + 1)
        if key == "headlines" and text.startswith("[", pos):
            return pos  # what follows the list is not read
        found[key] = pos
        end = _value_end(text, pos)
        if end is None:
            _fail(read, f"invalid JSON at line {text.count(chr(10), 0, pos) + 1}: the value of {key[:40]!r} never ends")
            return None
        pos = _space(text, end)
        if text.startswith(",", pos):
            pos = _space(text, pos + 1)
        elif not text.startswith("}", pos):
            _fail(read, f"invalid JSON at line {text.count(chr(10), 0, pos) + 1}: expected ',' or '}}'")
            return None
    start = found.get("headlines", found.get("items"))
    if start is None or not text.startswith("[", start):
        _fail(read, 'JSON must be a list of headline objects or {"headlines": [...]}')
        return None
    return start


_DECODER = json.JSONDecoder(parse_int=_parse_int)
_SPACE = re.compile(r"[ \t\n\r]*")
# A string (which JSON keeps on one line), a quote that opens one never closed on its line, or a bracket.
_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|"[^\n]*|[\[\]{}]')
_SCALAR_END = re.compile(r'"(?:[^"\\\n]|\\.)*"|[,\]}]')
_CLOSES = {"]": "[", "}": "{"}


def _space(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)
    return match.end() if match else pos


def _value_end(text: str, pos: int) -> int | None:
    """Where the JSON value at `pos` ends, found by its brackets alone (no recursion, no parsing):
    a record's bad contents are then skipped whole. None when its brackets never balance."""
    if pos >= len(text):
        return None
    if text[pos] not in "[{":  # a scalar, read or not: it runs to the next "," or closing bracket
        match = _SCALAR_END.search(text, pos)
        while match and match.group().startswith('"'):
            match = _SCALAR_END.search(text, match.end())
        return match.start() if match else None
    stack: list[str] = []
    for match in _TOKEN.finditer(text, pos):
        token = match.group()
        if token in ("[", "{"):
            stack.append(token)
        elif token in _CLOSES:
            if not stack or stack.pop() != _CLOSES[token]:
                return None
            if not stack:
                return match.end()
    return None


def _json_problem(exc: BaseException, text: str, pos: int) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    return f"invalid JSON at line {text.count(chr(10), 0, pos) + 1}: nested too deeply to read, and never closed"


class _LineCounter:
    """Line numbers of increasing offsets, counted once over the text, not from its start each time."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line = text, 0, 1

    def at(self, pos: int) -> int:
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def _jsonl_records(stream: io.BufferedReader, limit: int, skips: _Skips) -> Iterator[tuple[str, object]]:
    """One record per line, each decoded and parsed on its own: a bad line costs only itself,
    and a line over `limit` bytes is stepped over in chunks, never held whole."""
    for number, raw in enumerate(_lines(stream, limit), 1):
        where = f"line {number}"
        if raw is None:
            skips.add(f"line over {limit:,} bytes", where)
            continue
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            skips.add("not UTF-8", f"{where} byte 0x{raw[exc.start]:02x}")
            continue
        try:
            yield where, json.loads(line, parse_int=_parse_int)
        except ValueError:
            skips.add("unreadable JSON line", where)
        except RecursionError:
            skips.add("JSON nested too deeply", where)


def _lines(stream: io.BufferedReader, limit: int) -> Iterator[bytes | None]:
    """The stream's lines split at \\n (without it); None for a line over `limit` bytes, read past unkept."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if line.endswith(b"\n"):
            yield line[:-1]
        elif len(line) <= limit:  # the last line, unterminated
            yield line
        else:
            while (rest := stream.readline(_CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield None


def _csv_records(stream: io.BufferedReader, read: SourceRead, skips: _Skips) -> Iterator[tuple[str, object]]:
    rows = _csv_rows(_text_lines(stream), skips)
    try:
        header = next(rows, None)
        columns = [c.strip() for c in (header[1] if header else [])]
        missing = [keys[0] for keys in (TEXT_KEYS, LINK_KEYS) if not any(k in columns for k in keys)]
        if missing:
            _fail(read, f"CSV is missing column(s) {', '.join(missing)} (has: {', '.join(columns) or 'no header'})")
            return
        for where, row in rows:
            if not row:
                continue
            record = dict(zip(columns, row, strict=False))
            if len(row) > len(columns):
                record[None] = row[len(columns) :]
            yield where, record
    except _NotUtf8 as exc:
        _fail(read, str(exc))


class _NotUtf8(Exception):
    """A CSV file holds a byte that is not UTF-8: the whole file is refused, naming the byte and its offset."""

    def __init__(self, byte: int, offset: int):
        super().__init__(f"not UTF-8 text: byte 0x{byte:02x} at offset {offset}")


_UNDECODED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8


def _text_lines(stream: io.BufferedReader) -> Iterator[str | int]:
    """The stream's text lines, split at \\n, \\r and \\r\\n as csv splits them; a line over
    CSV_RECORD_CHARS is read past in chunks and given as its length (it is skipped whole anyway)."""
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    offset = 0

    def counted(piece: str) -> int:
        nonlocal offset
        if bad := _UNDECODED.search(piece):
            raise _NotUtf8(
                ord(bad.group()) - 0xDC00, offset + len(piece[: bad.start()].encode("utf-8", "surrogateescape"))
            )
        offset += len(piece.encode("utf-8", "surrogateescape"))
        return len(piece)

    try:
        while line := text.readline(CSV_RECORD_CHARS + 1):
            if offset == 0 and line.startswith("\ufeff"):
                offset, line = 3, line[1:]
            size = counted(line)
            if size <= CSV_RECORD_CHARS or line.endswith(("\n", "\r")):
                yield line
                continue
            while (rest := text.readline(_CHUNK)) and not rest.endswith(("\n", "\r")):
                size += counted(rest)
            yield size + counted(rest)
    finally:
        text.detach()


def _csv_rows(lines: Iterator[str | int], skips: _Skips) -> Iterator[tuple[str, list[str]]]:
    """CSV records with their first line, bounded and checked: a quote still open after CSV_RECORD_LINES
    lines or CSV_RECORD_CHARS characters, or closed by a quote that is not followed by a comma or the
    line's end, is unbalanced; only its first line is skipped, and reading goes on with the next one.
    At most CSV_RECORD_LINES lines are held at a time."""
    ahead: deque[str | int] = deque()  # lines read and not yet used; the first is line `first`
    first = 1

    def fill(count: int) -> None:
        while len(ahead) < count and (line := next(lines, None)) is not None:
            ahead.append(line)

    def used(count: int) -> None:
        nonlocal first
        for _ in range(count):
            ahead.popleft()
        first += count

    while True:
        fill(1)
        if not ahead:
            return
        end, inside, stray, size = 0, False, False, 0
        while end < CSV_RECORD_LINES and size <= CSV_RECORD_CHARS:
            fill(end + 1)
            if end >= len(ahead):
                break
            line = ahead[end]
            end += 1
            if isinstance(line, int):  # a line over the bound by itself
                size += line
                break
            inside, stray = _quote_state(line, inside)
            size += len(line)
            if stray or not inside:
                break
        where = f"line {first}"
        if size > CSV_RECORD_CHARS:
            skips.add(f"CSV record over {CSV_RECORD_CHARS:,} characters", where)
            used(end)
            continue
        if inside or stray:
            skips.add("unbalanced CSV quote", where)
            used(1)
            continue
        try:
            row = next(csv.reader(itertools.islice(ahead, end)), [])
        except csv.Error as exc:
            skips.add(f"unreadable CSV ({exc})", where)
            row = None
        used(end)
        if row is not None:
            yield where, row


def _quote_state(line: str, inside: bool) -> tuple[bool, bool]:
    """(inside a quoted field at the end of `line`, a closing quote followed by something but a comma).

    As in csv, a quote opens a field only at its start; inside one, a doubled quote is a literal.
    """
    at_field_start = not inside
    i, n = 0, len(line)
    while i < n:
        char = line[i]
        if inside:
            if char == '"':
                if i + 1 < n and line[i + 1] == '"':
                    i += 1
                else:
                    inside = False
                    if i + 1 < n and line[i + 1] not in ",\r\n":
                        return False, True
        elif char == '"' and at_field_start:
            inside = True
        at_field_start = char == "," and not inside
        i += 1
    return inside, False


def _fail(read: SourceRead, error: str) -> None:
    read.status = "failed"
    read.error = error


def _item(record: object, default_category: Category) -> RawItem | str:
    """A RawItem (its time already normalised to UTC), or the reason the record is skipped."""
    if not isinstance(record, dict):
        return "record is not an object"
    if any(isinstance(v, str) and not _is_unicode(v) for v in record.values()):
        return "text is not valid Unicode (lone surrogate)"
    category = _first(record, ("category",)) or default_category
    if category not in CATEGORIES:
        return f"unknown category {category[:20]!r}"
    published = next((record[k] for k in TIME_KEYS if record.get(k) not in (None, "")), None)
    when = to_utc_iso(published) if published is not None else None
    if published is not None and when is None:
        return "unreadable date"
    return RawItem(
        title=_first(record, TEXT_KEYS),
        link=_first(record, LINK_KEYS),
        published=when,
        source=_first(record, ("source",)),
        category=category,
    )


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _first(record: dict, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def date_hint(path: Path) -> str | None:
    found = _DATED_NAME.search(path.stem)
    return found.group(1) if found else None
