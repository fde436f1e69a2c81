"""The event log of one namespace on a Redis stream: `EventStore`, the one handle callers hold.

The work is done by small modules, one job each, which this one puts together:
`events.keys` (key names), `events.append` (the append script and its retries),
`events.reads` (reads by id, by type and date, in stream order), `events.verify`
(the chain check and the quarantine of foreign entries) and `events.transfer`
(export and import). All keys of a namespace share the `{ns}` hash tag, so the
append script stays valid on a Redis Cluster.

An entry is Varro's when ``ids`` maps its ``id`` field to its own entry id:
only the append script writes both. Anything else on the stream (an XADD by
another program, a copy of an entry, junk) is foreign: reads skip it and
remember its entry id (`foreign_seen`), the chain check lists it, the
dispatcher's consumer dead-letters it, and `quarantine_foreign` moves it to
``quarantine``. One foreign entry never stops the tools.

The names below stay importable from here (`from events.store import ...`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

import redis

from events import transfer, verify
from events.append import Appended, Appender
from events.ids import validate_ns
from events.keys import (
    STREAM_PATTERN,
    dates_key,
    ids_key,
    index_key,
    key,
    namespace_of,
    quarantine_key,
    shards_key,
    stream_key,
    tip_key,
)
from events.provenance import installed_version, utc_now
from events.reads import LogReader, StoredEvent
from events.schema import AnyEvent
from events.verify import VerifyReport

__all__ = [
    "Appended",
    "EventStore",
    "StoredEvent",
    "VerifyReport",
    "dates_key",
    "ids_key",
    "index_key",
    "installed_version",
    "key",
    "quarantine_key",
    "shards_key",
    "stream_key",
    "tip_key",
    "utc_now",
]


class EventStore(LogReader):
    """Append, read and check the log of namespace `ns` (reads: `events.reads.LogReader`)."""

    def __init__(self, redis: redis.Redis, ns: str, *, code_version: str | None = None):
        super().__init__(redis, validate_ns(ns))
        self.code_version = code_version or installed_version()
        self._appender = Appender(redis, self.ns, code_version=self.code_version)

    # ------------------------------------------------------------- writing

    def append(self, event: AnyEvent) -> Appended:
        """Record `event` once; a second append of the same id returns the first entry."""
        return self.append_many([event])[0]

    def append_many(self, events: Iterable[AnyEvent]) -> list[Appended]:
        """Append several events in one round trip per attempt, chained locally (`events.append`)."""
        return self._appender.append_many(events, lambda entry_id: self.entry(entry_id).event)

    # ------------------------------------------------------------- checking

    def verify(self) -> VerifyReport:
        """Walk the chain (`events.verify.verify`)."""
        return verify.verify(self)

    def quarantine_foreign(self, *, dry_run: bool = False) -> list[str]:
        """Move every foreign entry off the stream into ``quarantine`` (`events.verify.quarantine_foreign`)."""
        return verify.quarantine_foreign(self, dry_run=dry_run)

    # ------------------------------------------------------------- backup

    def export_jsonl(self, fh: TextIO) -> int:
        """One JSON line per own entry (`events.transfer.export_jsonl`); the number written."""
        return transfer.export_jsonl(self, fh)

    def import_jsonl(self, fh: TextIO) -> int:
        """Restore an export into this (empty) namespace (`events.transfer.import_jsonl`)."""
        return transfer.import_jsonl(self._appender, fh)

    @staticmethod
    def namespaces(redis: redis.Redis) -> list[str]:
        found = set()
        for name in redis.scan_iter(match=STREAM_PATTERN, count=1000):
            ns = namespace_of(name)
            if ns is not None:
                found.add(ns)
        return sorted(found)
