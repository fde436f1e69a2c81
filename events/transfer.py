"""Export and import of a namespace's log as JSON lines: a backup, restored byte for byte.

Each line holds an entry id, its chain hash and the event exactly as written
(not upcast), so an import restores the identical bytes under the same entry
ids, and the restored chain verifies.
"""

from __future__ import annotations

from typing import TextIO

import msgspec

from events import codec
from events.append import Appender, ScriptCall, script_call
from events.errors import EventDecodeError, EventError, NamespaceNotEmpty, PreconditionError
from events.keys import ids_key, tip_key
from events.reads import LogReader
from events.replies import text
from events.schema import GENESIS_HASH, PRECONDITIONS


def export_jsonl(log: LogReader, fh: TextIO) -> int:
    """One JSON object per entry: entry id, chain hash and the event exactly as
    written (not upcast), so import can restore the identical bytes. Foreign
    entries are left out (they are not part of the chain; see `foreign_seen`)."""
    n = 0
    for entry_id, fields in log.entries():
        raw = fields.get(b"e")
        if raw is None:
            raise EventDecodeError(f"entry {text(entry_id)} of namespace {log.ns!r} has no event payload")
        line = {"entry_id": text(entry_id), "hash": codec.entry_hash(raw), "event": codec.decode_builtins(raw)}
        fh.write(msgspec.json.encode(line).decode() + "\n")
        n += 1
    return n


def import_jsonl(appender: Appender, fh: TextIO) -> int:
    """Restore an export into this (empty) namespace with the same entry ids and bytes.

    An import is a restore: into the namespace the export was taken from, under
    the same name, so the chain verifies and an export of the restored namespace
    equals the original. Events whose `ns` is another name are refused (their
    namespace is part of every event id, and a dispatcher would start their work
    in that other, live namespace); a copy under a new name is a fork, which is
    `varro replay --into`. The whole file is checked (decodes, hashes, links,
    namespace) before anything is written.
    """
    ns = appender.ns
    if appender.redis.exists(LogReader(appender.redis, ns).stream, tip_key(ns), ids_key(ns)):
        raise NamespaceNotEmpty(f"namespace {ns!r} already has events; import needs an empty one")
    items = []
    link = GENESIS_HASH
    for lineno, line in enumerate(fh, 1):
        if line.strip():
            item = imported(lineno, line, link)
            items.append((lineno, item))
            link = item.link
    foreign = sorted({item.ns for _, item in items} - {ns})
    if foreign:
        names = ", ".join(repr(n) for n in foreign)
        raise EventError(
            f"the export holds events of namespace {names}, not {ns!r}: an import restores a "
            f"namespace under its own name (--ns {foreign[0]}); to copy it into {ns!r}, fork it "
            f"with `varro replay --ns {foreign[0]} --into {ns}`"
        )
    for lineno, item in items:
        status, reply = appender.run(item)
        if status == "missing":
            pre_type, _ = item.predecessors[int(reply) - 1]
            raise PreconditionError(
                f"line {lineno}: {item.event_type} for {item.date} needs {pre_type} "
                f"for {item.predecessor_dates[int(reply) - 1]}, which comes later or not at all"
            )
        if status == "dup":
            raise EventError(f"line {lineno}: event {item.event_id} appears twice")
        if status != "ok":
            raise EventError(f"line {lineno}: namespace {ns!r} changed during the import ({status})")
    return len(items)


def imported(lineno: int, line: str, link: str) -> ScriptCall:
    """The script call that restores one exported line, checked: it decodes, hashes as exported,
    and links to the line before (`link`)."""
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
    return script_call(
        value["ns"],
        value["type"],
        value["date"],
        value["event_id"],
        link,
        encoded,
        [value[field] for _, field in predecessors],
        entry_id,
    )
