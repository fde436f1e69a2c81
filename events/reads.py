"""Reading a namespace's log: by event id, by type and date (the indexes), or in stream order.

An entry is Varro's when ``ids`` maps its ``id`` field to its own entry id:
only the append script writes both. Anything else on the stream (an XADD by
another program, a copy of an entry, junk) is foreign: reads skip it and
remember its entry id (`foreign_seen`), so one foreign entry never stops the
tools.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar, cast

import redis

from events import codec, replies
from events.errors import EventDecodeError, EventError
from events.keys import dates_key, ids_key, index_key, stream_key
from events.replies import Row, text
from events.schema import AnyEvent, Event

PAGE = 1000
"""Entries per XRANGE/XREAD round trip."""

E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class StoredEvent:
    entry_id: str
    event: AnyEvent
    raw: bytes


class LogReader:
    """Reads of namespace `ns`'s log; remembers the foreign entries it skipped."""

    def __init__(self, redis: redis.Redis, ns: str):
        self.redis = redis
        self.ns = ns
        self._foreign: set[str] = set()

    @property
    def foreign_seen(self) -> list[str]:
        """Entry ids of the foreign entries this store's reads have skipped so far."""
        return sorted(self._foreign)

    @property
    def stream(self) -> str:
        return stream_key(self.ns)

    # ------------------------------------------------------------- by id

    def entry(self, entry_id: str) -> StoredEvent:
        """The entry an index names (an index naming no entry is an error: the script writes both)."""
        rows = replies.rows(self.redis.xrange(self.stream, entry_id, entry_id))
        if not rows:
            raise EventError(f"namespace {self.ns!r}: index names entry {entry_id}, which is not in the stream")
        return self.stored(*rows[0])

    def stored(self, entry_id: bytes, fields: dict[bytes, bytes]) -> StoredEvent:
        """One stream row, decoded (and upcast) into the event it holds."""
        entry = text(entry_id)
        raw = fields.get(b"e")
        if raw is None:
            raise EventDecodeError(f"entry {entry} of namespace {self.ns!r} has no event payload ('e' field)")
        try:
            return StoredEvent(entry, codec.decode(raw), raw)
        except EventDecodeError as exc:
            raise EventDecodeError(f"entry {entry} of namespace {self.ns!r}: {exc}") from None

    def get(self, event_id: str) -> AnyEvent | None:
        entry = self.redis.hget(ids_key(self.ns), event_id)
        return None if entry is None else self.entry(text(entry)).event

    def entry_id(self, event_id: str) -> str | None:
        entry = self.redis.hget(ids_key(self.ns), event_id)
        return None if entry is None else text(entry)

    def get_of(self, cls: type[E], event_id: str) -> E | None:
        """`get`, typed: the event `event_id` when it is recorded and a `cls`; None otherwise.

        An id that names an event of another type gives None as well: to a caller
        that needs a `cls`, what it needs is not recorded.
        """
        event = self.get(event_id)
        return event if isinstance(event, cls) else None

    # ------------------------------------------------------------- by type and date

    def latest(self, event_type: str, date: str) -> AnyEvent | None:
        """The most recently appended event of that type and date (a forced re-run wins)."""
        event_id = self.redis.lindex(index_key(self.ns, event_type, date), -1)
        return None if event_id is None else self.get(text(event_id))

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
        return [self.stored(*replies.rows(rows)[0]).event for rows in pipe.execute()]

    def dates(self, event_type: str) -> list[str]:
        # without scores, ZRANGE replies with the members alone
        members = cast("list[bytes]", self.redis.zrange(dates_key(self.ns, event_type), 0, -1))
        return [text(d) for d in members]

    # ------------------------------------------------------------- in stream order

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
            yield self.stored(entry_id, fields)

    def raw_entries(self, start: str = "-", end: str = "+") -> Iterator[Row]:
        """Stream entries as stored, undecoded, foreign ones included: for verify and benchmarks."""
        for rows in self.pages(start, end):
            yield from rows

    def entries(self, start: str = "-", end: str = "+") -> Iterator[Row]:
        """Varro's own stream entries, undecoded; foreign ones are skipped (and remembered)."""
        for rows in self.pages(start, end):
            yield from self.own(rows)

    def pages(self, start: str = "-", end: str = "+") -> Iterator[list[Row]]:
        """The stream from `start` to `end`, `PAGE` rows at a time, foreign entries included."""
        cursor = start
        while True:
            rows = replies.rows(self.redis.xrange(self.stream, cursor, end, count=PAGE))
            yield rows
            if len(rows) < PAGE:
                return
            cursor = "(" + text(rows[-1][0])

    def own(self, rows: list[Row]) -> list[Row]:
        """The rows the append script wrote (one HMGET for the lot); the others are noted as foreign."""
        if not rows:
            return []
        recorded = self.redis.hmget(ids_key(self.ns), [fields.get(b"id") or b"" for _, fields in rows])
        own = []
        for (entry_id, fields), entry in zip(rows, recorded, strict=True):
            if entry is not None and text(entry) == text(entry_id):
                own.append((entry_id, fields))
            else:
                self._foreign.add(text(entry_id))
        return own

    def count(self) -> int:
        return int(self.redis.xlen(self.stream))

    def last(self, n: int, *, end: str = "+") -> list[StoredEvent]:
        """The `n` newest entries up to `end`, oldest first (foreign entries skipped)."""
        newest: list[Row] = []
        cursor = end
        while n > 0 and len(newest) < n:
            rows = replies.rows(self.redis.xrevrange(self.stream, cursor, "-", count=n))
            newest += self.own(rows)
            if len(rows) < n:
                break
            cursor = "(" + text(rows[-1][0])
        return [self.stored(entry_id, fields) for entry_id, fields in reversed(newest[:n])]

    def last_entry_id(self) -> str | None:
        rows = replies.rows(self.redis.xrevrange(self.stream, count=1))
        return text(rows[0][0]) if rows else None

    def follow(
        self, *, last_id: str = "$", block_ms: int = 1000, stop: Callable[[], bool] | None = None
    ) -> Iterator[StoredEvent]:
        """Entries appended after `last_id` ("$" = after this call), as they arrive;
        `stop` is checked at least every `block_ms`."""
        cursor = (self.last_entry_id() or "0-0") if last_id == "$" else last_id

        def entries(cursor: str) -> Iterator[StoredEvent]:
            while stop is None or not stop():
                reply = self.redis.xread({self.stream: cursor}, count=PAGE, block=block_ms)
                for _, rows in replies.stream_rows(reply):
                    cursor = text(rows[-1][0]) if rows else cursor
                    for entry_id, fields in self.own(rows):
                        yield self.stored(entry_id, fields)

        return entries(cursor)
