"""Deterministic identities: event ids, content hashes, namespace and date checks."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable

import msgspec

_NS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_hash(value: object) -> str:
    """sha256 of a value's canonical JSON (sorted keys): stable across processes."""
    return sha256_hex(msgspec.json.encode(value, order="sorted"))


def derive_event_id(ns: str, event_type: str, date: str, inputs: Iterable[str]) -> str:
    """The id of the event an action on these inputs produces.

    Re-running the same action on the same inputs yields the same id, so the
    store's dedup makes the re-run a no-op. A forced re-run adds a distinguishing
    input (e.g. ``force:<n>``) and so becomes a new, marked event.
    """
    parts = [ns, event_type, date, *inputs]
    return sha256_hex("\x1f".join(parts).encode())[:32]


def validate_ns(ns: str) -> str:
    if not _NS_RE.match(ns):
        raise ValueError(
            f"invalid namespace {ns!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return ns


def validate_date(date: str) -> str:
    """Logical dates are ISO `YYYY-MM-DD` strings; refuse anything else early."""
    try:
        parsed = dt.date.fromisoformat(date)
    except (TypeError, ValueError):
        raise ValueError(f"invalid date {date!r}: expected YYYY-MM-DD") from None
    if parsed.isoformat() != date:
        raise ValueError(f"invalid date {date!r}: expected YYYY-MM-DD")
    return date


# The latest day a command accepts, counted from today (UTC): a run a few months ahead is
# plausible planning, while 9999-12-31 is a typo that would overflow the day after it.
MAX_DAYS_AHEAD = 366
# The earliest: headline archives reach back decades, not to year 1 (whose day before overflows).
EARLIEST_DATE = "1900-01-01"
# Seeds are recorded in events (msgpack) and RQ's JSON payloads: both carry a signed 64-bit
# integer exactly, so a seed is 0 <= seed <= 2**63 - 1.
MAX_SEED = 2**63 - 1


def bounded_date(date: str, *, today: str | None = None) -> str:
    """A valid date between EARLIEST_DATE and MAX_DAYS_AHEAD after today (UTC), else ValueError.

    Only what a person asks for is bounded here; recorded days are read as they are.
    """
    validate_date(date)
    latest = shift_date(today or today_utc(), MAX_DAYS_AHEAD)
    if date > latest:
        raise ValueError(f"date {date} is too far ahead: at most {MAX_DAYS_AHEAD} days after today (until {latest})")
    if date < EARLIEST_DATE:
        raise ValueError(f"date {date} is too early: the earliest day is {EARLIEST_DATE}")
    return date


def today_utc() -> str:
    """Today's logical date (UTC). The wall clock picks *which* day a trigger asks for; nothing downstream reads it."""
    return dt.datetime.now(dt.UTC).date().isoformat()


def shift_date(date: str, days: int) -> str:
    return (dt.date.fromisoformat(date) + dt.timedelta(days=days)).isoformat()


def date_range(start: str, end: str) -> list[str]:
    a, b = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if b < a:
        raise ValueError(f"empty date range: {start} is after {end}")
    return [(a + dt.timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]
