"""The event log of one namespace on a Redis stream.

Every append runs one server-side script that, atomically: returns the
existing entry when the event id is already recorded (re-running an action is
a no-op), refuses an event whose predecessor (`events.schema.PRECONDITIONS`)
is missing, extends the hash chain only if its tip is still the one the client
linked to, XADDs the entry and updates the indexes. All keys of a namespace
share the `{ns}` hash tag, so the script stays valid on a Redis Cluster.

Keys (``varro:{ns}:...``): ``stream`` (the log; field ``e`` holds the encoded
event, ``id``/``type``/``date``/``h`` are for humans and cheap filtering),
``ids`` (event id -> entry id), ``idx:<type>:<date>`` (event ids in append
order), ``dates:<type>`` (dates having that type) and ``tip`` (hash of the
last entry).

An entry is Varro's when ``ids`` maps its ``id`` field to its own entry id:
only the append script writes both. Anything else on the stream (an XADD by
another program, a copy of an entry, junk) is foreign: reads skip it and
remember its entry id (`foreign_seen`), the chain check lists it, the
dispatcher's consumer dead-letters it, and `quarantine_foreign` moves it to
``quarantine``. One foreign entry never stops the tools.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO, TypeVar, cast

import msgspec
import redis
from redis.typing import EncodableT, FieldT

from events import codec, replies
from events.errors import ChainConflict, EventDecodeError, EventError, NamespaceNotEmpty, PreconditionError
from events.ids import validate_date, validate_ns
from events.replies import Row
from events.replies import text as _s
from events.schema import CURRENT_VERSIONS, GENESIS_HASH, PRECONDITIONS, AnyEvent, Event

_PAGE = 1000
_MAX_ATTEMPTS = 200

E = TypeVar("E", bound=Event)


def key(ns: str, *parts: str) -> str:
    return ":".join((f"varro:{{{ns}}}", *parts))


def stream_key(ns: str) -> str:
    return key(ns, "stream")


def ids_key(ns: str) -> str:
    return key(ns, "ids")


def tip_key(ns: str) -> str:
    return key(ns, "tip")


def index_key(ns: str, event_type: str, date: str) -> str:
    return key(ns, "idx", event_type, date)


def shards_key(ns: str, date: str, cause: str) -> str:
    """Coordination state of a sharded generation (not history): shard -> artifact ref."""
    return key(ns, "shards", date, cause)


def dates_key(ns: str, event_type: str) -> str:
    return key(ns, "dates", event_type)


def quarantine_key(ns: str) -> str:
    return key(ns, "quarantine")


_NS_FROM_STREAM = re.compile(rb"^varro:\{([^}]+)\}:stream$")

# KEYS: stream, ids, tip, index(type,date), dates(type), predecessor indexes...
# ARGV: event id, encoded, expected tip, new tip, type, date, entry id ('*'), genesis
_APPEND_LUA = """
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then return {'dup', existing} end
for i = 6, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then return {'missing', tostring(i - 5)} end
end
local tip = redis.call('GET', KEYS[3]) or ARGV[8]
if tip ~= ARGV[3] then return {'conflict', tip} end
local entry = redis.call('XADD', KEYS[1], ARGV[7], 'e', ARGV[2], 'id', ARGV[1],
  'type', ARGV[5], 'date', ARGV[6], 'h', ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], entry)
redis.call('RPUSH', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[5], 0, ARGV[6])
redis.call('SET', KEYS[3], ARGV[4])
return {'ok', entry}
"""


@dataclass(frozen=True)
class StoredEvent:
    entry_id: str
    event: AnyEvent
    raw: bytes


@dataclass(frozen=True)
class Appended:
    entry_id: str
    event: AnyEvent
    created: bool  # False: the event id was already recorded; this is that entry


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checked: int
    first_broken: str | None = None
    reason: str | None = None
    foreign: tuple[str, ...] = ()  # entry ids on the stream that Varro did not write (not part of the chain)


@dataclass(frozen=True)
class _Prepared:
    """One call of the append script, and what its refusals name."""

    keys: list[str]
    args: list[str | bytes]
    event_id: str
    ns: str
    event_type: str
    date: str
    link: str  # this entry's hash: the next entry's prev_hash
    predecessors: tuple[tuple[str, str], ...]
    predecessor_dates: list[str]


def _script_reply(reply: object) -> tuple[str, str]:
    """The append script's answer, a pair of bytes: (status, entry id | chain tip | predecessor number)."""
    status, value = cast("list[bytes]", reply)
    return _s(status), _s(value)


def installed_version() -> str:
    """The installed Varro distribution's version, recorded in every event (events/ must not import varro/)."""
    try:
        return importlib.metadata.version("varro")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


class EventStore:
    """Append, read and check the log of namespace `ns`."""

    def __init__(self, redis: redis.Redis, ns: str, *, code_version: str | None = None):
        self.redis = redis
        self.ns = validate_ns(ns)
        self.code_version = code_version or installed_version()
        self._tip: str | None = None
        self._append_script = redis.register_script(_APPEND_LUA)
        self._foreign: set[str] = set()

    @property
    def foreign_seen(self) -> list[str]:
        """Entry ids of the foreign entries this store's reads have skipped so far."""
        return sorted(self._foreign)

    @property
    def stream(self) -> str:
        return stream_key(self.ns)

    # ------------------------------------------------------------- writing

    def append(self, event: AnyEvent) -> Appended:
        """Record `event` once; a second append of the same id returns the first entry."""
        return self.append_many([event])[0]

    def append_many(self, events: Iterable[AnyEvent]) -> list[Appended]:
        """Append several events in one round trip per attempt, chained locally.

        Each script still checks the tip it was linked to, so a concurrent writer
        only makes the rest of the batch retry from the tip the script reports.
        """
        pending = [self._stamp(e) for e in events]
        results: list[Appended] = []
        # The last tip this store saw is a hint that saves a round trip; the script corrects it.
        tip = self._tip or _s(self.redis.get(tip_key(self.ns)) or GENESIS_HASH)
        for _ in range(_MAX_ATTEMPTS):
            if not pending:
                return results
            prepared: list[tuple[AnyEvent, _Prepared]] = []
            link = tip
            for event in pending:
                linked = msgspec.structs.replace(event, prev_hash=link)
                item = self._prepare(linked)
                prepared.append((linked, item))
                link = item.link
            pipe = self.redis.pipeline(transaction=False)
            for _, item in prepared:
                self._append_script(keys=item.keys, args=item.args, client=pipe)
            done = 0
            for (linked, item), reply in zip(prepared, pipe.execute(), strict=True):
                status, value = _script_reply(reply)
                if status == "ok":
                    results.append(Appended(value, linked, True))
                    tip = item.link
                elif status == "dup":
                    results.append(Appended(value, self._entry(value).event, False))
                elif status == "missing":
                    self._tip = tip
                    pre_type, field = item.predecessors[int(value) - 1]
                    raise PreconditionError(
                        f"{item.event_type} for {item.date} in namespace {self.ns!r} needs "
                        f"{pre_type} for {item.predecessor_dates[int(value) - 1]} (field {field!r}), "
                        "which is not recorded"
                    )
                else:
                    tip = value
                    break
                done += 1
            self._tip = tip
            pending = pending[done:]
        raise ChainConflict(f"namespace {self.ns!r}: chain tip kept moving for {_MAX_ATTEMPTS} attempts")

    def _stamp(self, event: AnyEvent) -> AnyEvent:
        if not isinstance(event, Event):
            raise EventError(f"not an event: {type(event).__name__}")
        if event.ns != self.ns:
            raise EventError(f"event {event.event_id} belongs to namespace {event.ns!r}, not {self.ns!r}")
        try:
            validate_date(event.date)
        except ValueError as exc:
            raise EventError(f"event {event.event_id}: {exc}") from None
        # Events are always written at their type's current schema version, so the
        # codec never runs a fresh event through an upcaster meant for old ones.
        return msgspec.structs.replace(
            event,
            recorded_at=utc_now(),
            code_version=self.code_version,
            schema_version=CURRENT_VERSIONS[type(event).__name__],
        )

    def _prepare(self, event: AnyEvent) -> _Prepared:
        event_type = type(event).__name__
        predecessors = PRECONDITIONS.get(event_type, ())
        encoded = codec.encode(event)
        return self._prepared_from(
            event.ns,
            event_type,
            event.date,
            event.event_id,
            event.prev_hash,
            encoded,
            predecessors,
            [getattr(event, field) for _, field in predecessors],
            "*",
        )

    def _prepared_from(
        self,
        ns: str,
        event_type: str,
        date: str,
        event_id: str,
        prev_hash: str,
        encoded: bytes,
        predecessors: tuple[tuple[str, str], ...],
        predecessor_dates: list[str],
        entry_id: str,
    ) -> _Prepared:
        keys = [
            self.stream,
            ids_key(self.ns),
            tip_key(self.ns),
            index_key(self.ns, event_type, date),
            dates_key(self.ns, event_type),
        ]
        keys += [index_key(self.ns, t, d) for (t, _), d in zip(predecessors, predecessor_dates, strict=True)]
        link = codec.entry_hash(encoded)
        args: list[str | bytes] = [event_id, encoded, prev_hash, link, event_type, date, entry_id, GENESIS_HASH]
        return _Prepared(keys, args, event_id, ns, event_type, date, link, predecessors, predecessor_dates)

    # ------------------------------------------------------------- reading

    def _entry(self, entry_id: str) -> StoredEvent:
        rows = replies.rows(self.redis.xrange(self.stream, entry_id, entry_id))
        if not rows:
            raise EventError(f"namespace {self.ns!r}: index names entry {entry_id}, which is not in the stream")
        return self._stored(*rows[0])

    def _stored(self, entry_id: bytes, fields: dict[bytes, bytes]) -> StoredEvent:
        entry = _s(entry_id)
        raw = fields.get(b"e")
        if raw is None:
            raise EventDecodeError(f"entry {entry} of namespace {self.ns!r} has no event payload ('e' field)")
        try:
            return StoredEvent(entry, codec.decode(raw), raw)
        except EventDecodeError as exc:
            raise EventDecodeError(f"entry {entry} of namespace {self.ns!r}: {exc}") from None

    def get(self, event_id: str) -> AnyEvent | None:
        entry = self.redis.hget(ids_key(self.ns), event_id)
        return None if entry is None else self._entry(_s(entry)).event

    def entry_id(self, event_id: str) -> str | None:
        entry = self.redis.hget(ids_key(self.ns), event_id)
        return None if entry is None else _s(entry)

    def latest(self, event_type: str, date: str) -> AnyEvent | None:
        """The most recently appended event of that type and date (a forced re-run wins)."""
        event_id = self.redis.lindex(index_key(self.ns, event_type, date), -1)
        return None if event_id is None else self.get(_s(event_id))

    def get_of(self, cls: type[E], event_id: str) -> E | None:
        """`get`, typed: the event `event_id` when it is recorded and a `cls`; None otherwise.

        An id that names an event of another type gives None as well: to a caller
        that needs a `cls`, what it needs is not recorded.
        """
        event = self.get(event_id)
        return event if isinstance(event, cls) else None

    def latest_of(self, cls: type[E], date: str) -> E | None:
        """`latest`, typed: the most recent `cls` event of `date`, or None."""
        event = self.latest(cls.__name__, date)
        return event if isinstance(event, cls) else None

    def all_of(self, cls: type[E], date: str) -> list[E]:
        """`all_for`, typed: the `cls` events of `date` in append order."""
        return [event for event in self.all_for(cls.__name__, date) if isinstance(event, cls)]

    def all_for(self, event_type: str, date: str) -> list[AnyEvent]:
        event_ids = self.redis.lrange(index_key(self.ns, event_type, date), 0, -1)
        if not event_ids:
            return []
        entries = self.redis.hmget(ids_key(self.ns), event_ids)
        pipe = self.redis.pipeline(transaction=False)
        for entry in entries:
            if entry is None:  # the append script writes the index and `ids` together
                raise EventError(f"namespace {self.ns!r}: index of {event_type} {date} names an unrecorded event")
            pipe.xrange(self.stream, entry, entry)
        return [self._stored(*replies.rows(rows)[0]).event for rows in pipe.execute()]

    def read(
        self,
        *,
        start: str = "-",
        end: str = "+",
        types: Iterable[str] | None = None,
        dates: Iterable[str] | None = None,
    ) -> Iterator[StoredEvent]:
        """Entries from `start` to `end` (inclusive stream ids) in append order, paged."""
        want_types = None if types is None else {t.encode() for t in types}
        want_dates = None if dates is None else {d.encode() for d in dates}
        for entry_id, fields in self.entries(start, end):
            if want_types is not None and fields.get(b"type") not in want_types:
                continue
            if want_dates is not None and fields.get(b"date") not in want_dates:
                continue
            yield self._stored(entry_id, fields)

    def raw_entries(self, start: str = "-", end: str = "+") -> Iterator[Row]:
        """Stream entries as stored, undecoded, foreign ones included: for verify and benchmarks."""
        for rows in self._pages(start, end):
            yield from rows

    def entries(self, start: str = "-", end: str = "+") -> Iterator[Row]:
        """Varro's own stream entries, undecoded; foreign ones are skipped (and remembered)."""
        for rows in self._pages(start, end):
            yield from self._own(rows)

    def _pages(self, start: str, end: str) -> Iterator[list[Row]]:
        cursor = start
        while True:
            rows = replies.rows(self.redis.xrange(self.stream, cursor, end, count=_PAGE))
            yield rows
            if len(rows) < _PAGE:
                return
            cursor = "(" + _s(rows[-1][0])

    def _own(self, rows: list[Row]) -> list[Row]:
        """The rows the append script wrote (one HMGET for the lot); the others are noted as foreign."""
        if not rows:
            return []
        recorded = self.redis.hmget(ids_key(self.ns), [fields.get(b"id") or b"" for _, fields in rows])
        own = []
        for (entry_id, fields), entry in zip(rows, recorded, strict=True):
            if entry is not None and _s(entry) == _s(entry_id):
                own.append((entry_id, fields))
            else:
                self._foreign.add(_s(entry_id))
        return own

    def dates(self, event_type: str) -> list[str]:
        # without scores, ZRANGE replies with the members alone
        members = cast("list[bytes]", self.redis.zrange(dates_key(self.ns, event_type), 0, -1))
        return [_s(d) for d in members]

    def count(self) -> int:
        return int(self.redis.xlen(self.stream))

    def last(self, n: int, *, end: str = "+") -> list[StoredEvent]:
        """The `n` newest entries up to `end`, oldest first (foreign entries skipped)."""
        newest: list[Row] = []
        cursor = end
        while n > 0 and len(newest) < n:
            rows = replies.rows(self.redis.xrevrange(self.stream, cursor, "-", count=n))
            newest += self._own(rows)
            if len(rows) < n:
                break
            cursor = "(" + _s(rows[-1][0])
        return [self._stored(entry_id, fields) for entry_id, fields in reversed(newest[:n])]

    def last_entry_id(self) -> str | None:
        rows = replies.rows(self.redis.xrevrange(self.stream, count=1))
        return _s(rows[0][0]) if rows else None

    def follow(
        self, *, last_id: str = "$", block_ms: int = 1000, stop: Callable[[], bool] | None = None
    ) -> Iterator[StoredEvent]:
        """Entries appended after `last_id` ("$" = after this call), as they arrive;
        `stop` is checked at least every `block_ms`."""
        cursor = (self.last_entry_id() or "0-0") if last_id == "$" else last_id

        def entries(cursor: str) -> Iterator[StoredEvent]:
            while stop is None or not stop():
                reply = self.redis.xread({self.stream: cursor}, count=_PAGE, block=block_ms)
                for _, rows in replies.stream_rows(reply):
                    cursor = _s(rows[-1][0]) if rows else cursor
                    for entry_id, fields in self._own(rows):
                        yield self._stored(entry_id, fields)

        return entries(cursor)

    # ------------------------------------------------------------- checking

    def verify(self) -> VerifyReport:
        """Walk the chain: every entry's bytes hash to its recorded link, every
        `prev_hash` names the entry before, and the tip names the last one."""
        expected_prev = GENESIS_HASH
        checked = 0
        last = None
        foreign: list[str] = []
        for rows in self._pages("-", "+"):
            own = {_s(entry_id) for entry_id, _ in self._own(rows)}
            for entry_id, fields in rows:
                entry = _s(entry_id)
                if entry not in own:
                    foreign.append(entry)
                    continue
                report = self._check_link(entry, fields, expected_prev, last, checked, tuple(foreign))
                if isinstance(report, VerifyReport):
                    return report
                expected_prev, last, checked = report, entry, checked + 1
        tip = _s(self.redis.get(tip_key(self.ns)) or GENESIS_HASH)
        if tip != expected_prev:
            return VerifyReport(
                False,
                checked,
                last,
                f"recorded chain tip {tip[:16]} does not match the last entry's hash {expected_prev[:16]}",
                tuple(foreign),
            )
        return VerifyReport(True, checked, foreign=tuple(foreign))

    @staticmethod
    def _check_link(
        entry: str,
        fields: dict[bytes, bytes],
        expected_prev: str,
        last: str | None,
        checked: int,
        foreign: tuple[str, ...],
    ) -> str | VerifyReport:
        """One own entry of the chain: its hash (what the next entry must link to), or how it is broken."""

        def broken(reason: str) -> VerifyReport:
            return VerifyReport(False, checked, entry, reason, foreign)

        raw = fields.get(b"e")
        if raw is None:
            return broken("entry has no event payload ('e' field)")
        actual = codec.entry_hash(raw)
        recorded = _s(fields.get(b"h", b""))
        if recorded != actual:
            return broken(
                f"content hashes to {actual[:16]}, but the entry records {recorded[:16]}: its bytes were altered"
            )
        try:
            event = codec.decode(raw)
        except EventDecodeError as exc:
            return broken(f"undecodable: {exc}")
        if event.prev_hash != expected_prev:
            return broken(
                f"prev_hash {event.prev_hash[:16]} does not match the previous entry "
                f"({last or 'genesis'}) which hashes to {expected_prev[:16]}"
            )
        return actual

    def quarantine_foreign(self, *, dry_run: bool = False) -> list[str]:
        """Move every foreign entry off the stream into ``quarantine``; their entry ids.

        Each is copied there first (its fields under ``f:<name>``, with its entry
        id and when it was moved), then deleted from the stream, in one
        transaction per entry; Varro's own entries are never touched.
        """
        moved = []
        for rows in self._pages("-", "+"):
            own = {_s(entry_id) for entry_id, _ in self._own(rows)}
            for entry_id, fields in rows:
                entry = _s(entry_id)
                if entry in own:
                    continue
                moved.append(entry)
                if dry_run:
                    continue
                pipe = self.redis.pipeline(transaction=True)
                copy: dict[FieldT, EncodableT] = {b"entry_id": entry.encode(), b"quarantined_at": utc_now().encode()}
                copy.update({b"f:" + k: v for k, v in fields.items()})
                pipe.xadd(quarantine_key(self.ns), copy)
                pipe.xdel(self.stream, entry)
                pipe.execute()
        return moved

    # ------------------------------------------------------------- backup

    def export_jsonl(self, fh: TextIO) -> int:
        """One JSON object per entry: entry id, chain hash and the event exactly as
        written (not upcast), so import can restore the identical bytes. Foreign
        entries are left out (they are not part of the chain; see `foreign_seen`)."""
        n = 0
        for entry_id, fields in self.entries():
            raw = fields.get(b"e")
            if raw is None:
                raise EventDecodeError(f"entry {_s(entry_id)} of namespace {self.ns!r} has no event payload")
            line = {"entry_id": _s(entry_id), "hash": codec.entry_hash(raw), "event": codec.decode_builtins(raw)}
            fh.write(msgspec.json.encode(line).decode() + "\n")
            n += 1
        return n

    def import_jsonl(self, fh: TextIO) -> int:
        """Restore an export into this (empty) namespace with the same entry ids and bytes.

        An import is a restore: into the namespace the export was taken from, under
        the same name, so the chain verifies and an export of the restored namespace
        equals the original. Events whose `ns` is another name are refused (their
        namespace is part of every event id, and a dispatcher would start their work
        in that other, live namespace); a copy under a new name is a fork, which is
        `varro replay --into`. The whole file is checked (decodes, hashes, links,
        namespace) before anything is written.
        """
        if self.redis.exists(self.stream, tip_key(self.ns), ids_key(self.ns)):
            raise NamespaceNotEmpty(f"namespace {self.ns!r} already has events; import needs an empty one")
        items = []
        link = GENESIS_HASH
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                item = self._imported(lineno, line, link)
                items.append((lineno, item))
                link = item.link
        foreign = sorted({item.ns for _, item in items} - {self.ns})
        if foreign:
            names = ", ".join(repr(n) for n in foreign)
            raise EventError(
                f"the export holds events of namespace {names}, not {self.ns!r}: an import restores a "
                f"namespace under its own name (--ns {foreign[0]}); to copy it into {self.ns!r}, fork it "
                f"with `varro replay --ns {foreign[0]} --into {self.ns}`"
            )
        for lineno, item in items:
            status, reply = _script_reply(self._append_script(keys=item.keys, args=item.args))
            if status == "missing":
                pre_type, _ = item.predecessors[int(reply) - 1]
                raise PreconditionError(
                    f"line {lineno}: {item.event_type} for {item.date} needs {pre_type} "
                    f"for {item.predecessor_dates[int(reply) - 1]}, which comes later or not at all"
                )
            if status == "dup":
                raise EventError(f"line {lineno}: event {item.event_id} appears twice")
            if status != "ok":
                raise EventError(f"line {lineno}: namespace {self.ns!r} changed during the import ({status})")
        return len(items)

    def _imported(self, lineno: int, line: str, link: str) -> _Prepared:
        try:
            record = msgspec.json.decode(line)
            entry_id, expected, value = record["entry_id"], record["hash"], record["event"]
            if not isinstance(value, dict):
                raise TypeError("'event' is not an object")
            codec.from_builtins(dict(value))
        except (msgspec.DecodeError, KeyError, TypeError, EventDecodeError) as exc:
            raise EventDecodeError(f"line {lineno}: not an exported event ({exc})") from None
        encoded = codec.encode_builtins(value)
        if codec.entry_hash(encoded) != expected:
            raise EventDecodeError(
                f"line {lineno} (entry {entry_id}): re-encoded bytes do not hash to the exported "
                f"{expected[:16]}; the line was edited or holds a value JSON cannot carry (NaN)"
            )
        if value.get("prev_hash") != link:
            raise EventError(
                f"line {lineno} (entry {entry_id}): prev_hash does not link to the line before; "
                "the export is out of order or its chain was already broken"
            )
        predecessors = PRECONDITIONS.get(value["type"], ())
        return self._prepared_from(
            value["ns"],
            value["type"],
            value["date"],
            value["event_id"],
            link,
            encoded,
            predecessors,
            [value[field] for _, field in predecessors],
            entry_id,
        )

    @staticmethod
    def namespaces(redis: redis.Redis) -> list[str]:
        found = set()
        for name in redis.scan_iter(match="varro:{*}:stream", count=1000):
            m = _NS_FROM_STREAM.match(name if isinstance(name, bytes) else name.encode())
            if m:
                found.add(m.group(1).decode())
        return sorted(found)
