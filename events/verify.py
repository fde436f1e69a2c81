"""Checking a namespace's log: the hash chain, and moving foreign entries out of its way.

The chain holds when every own entry's bytes hash to its recorded link, every
`prev_hash` names the own entry before, and ``tip`` names the last one. Foreign
entries (`events.reads`) are not part of the chain: the check lists them, and
`quarantine_foreign` moves them to ``quarantine``.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.typing import EncodableT, FieldT

from events import codec
from events.errors import EventDecodeError
from events.keys import quarantine_key, tip_key
from events.provenance import utc_now
from events.reads import LogReader
from events.replies import text
from events.schema import GENESIS_HASH


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checked: int
    first_broken: str | None = None
    reason: str | None = None
    foreign: tuple[str, ...] = ()  # entry ids on the stream that Varro did not write (not part of the chain)


def verify(log: LogReader) -> VerifyReport:
    """Walk the chain: every entry's bytes hash to its recorded link, every
    `prev_hash` names the entry before, and the tip names the last one."""
    expected_prev = GENESIS_HASH
    checked = 0
    last = None
    foreign: list[str] = []
    for rows in log.pages("-", "+"):
        own = {text(entry_id) for entry_id, _ in log.own(rows)}
        for entry_id, fields in rows:
            entry = text(entry_id)
            if entry not in own:
                foreign.append(entry)
                continue
            report = check_link(entry, fields, expected_prev, last, checked, tuple(foreign))
            if isinstance(report, VerifyReport):
                return report
            expected_prev, last, checked = report, entry, checked + 1
    tip = text(log.redis.get(tip_key(log.ns)) or GENESIS_HASH)
    if tip != expected_prev:
        return VerifyReport(
            False,
            checked,
            last,
            f"recorded chain tip {tip[:16]} does not match the last entry's hash {expected_prev[:16]}",
            tuple(foreign),
        )
    return VerifyReport(True, checked, foreign=tuple(foreign))


def check_link(
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
    recorded = text(fields.get(b"h", b""))
    if recorded != actual:
        return broken(f"content hashes to {actual[:16]}, but the entry records {recorded[:16]}: its bytes were altered")
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


def quarantine_foreign(log: LogReader, *, dry_run: bool = False) -> list[str]:
    """Move every foreign entry off the stream into ``quarantine``; their entry ids.

    Each is copied there first (its fields under ``f:<name>``, with its entry
    id and when it was moved), then deleted from the stream, in one
    transaction per entry; Varro's own entries are never touched.
    """
    moved = []
    for rows in log.pages("-", "+"):
        own = {text(entry_id) for entry_id, _ in log.own(rows)}
        for entry_id, fields in rows:
            entry = text(entry_id)
            if entry in own:
                continue
            moved.append(entry)
            if dry_run:
                continue
            pipe = log.redis.pipeline(transaction=True)
            copy: dict[FieldT, EncodableT] = {b"entry_id": entry.encode(), b"quarantined_at": utc_now().encode()}
            copy.update({b"f:" + k: v for k, v in fields.items()})
            pipe.xadd(quarantine_key(log.ns), copy)
            pipe.xdel(log.stream, entry)
            pipe.execute()
    return moved
