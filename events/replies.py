"""The shapes of the Redis stream replies Varro reads, typed once where they enter.

`events.connection.connect` asks for raw bytes (``decode_responses=False``) and
RESP2, so entry ids, field names and values arrive as bytes, and XREAD replies
as a list of ``[stream, rows]`` pairs. redis-py types these commands for every
client setting at once (``bytes | str``, RESP3's dict form, an optional reply),
which no caller can use as it stands; each function here states what this
client actually receives, so the code past it is checked against that.
"""

from __future__ import annotations

from typing import TypedDict, cast

# One stream entry: (entry id, fields).
Row = tuple[bytes, dict[bytes, bytes]]
# One entry of XAUTOCLAIM: fields are None for a pending entry deleted from the stream.
ClaimedRow = tuple[bytes, dict[bytes, bytes] | None]


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def rows(reply: object) -> list[Row]:
    """An XRANGE or XREVRANGE reply (empty when there is none)."""
    return cast("list[Row]", reply or [])


def stream_rows(reply: object) -> list[tuple[bytes, list[Row]]]:
    """An XREAD or XREADGROUP reply, (stream, rows) per stream; None (a timed-out block) is empty."""
    return cast("list[tuple[bytes, list[Row]]]", reply or [])


def claimed(reply: object) -> tuple[list[ClaimedRow], list[bytes]]:
    """An XAUTOCLAIM reply: the claimed entries, and the pending ids deleted from the stream (Redis 7+)."""
    parts = cast("list[object]", reply)
    deleted = cast("list[bytes]", parts[2]) if len(parts) > 2 else []
    return cast("list[ClaimedRow]", parts[1]), deleted


class PendingEntry(TypedDict):
    """One entry of an XPENDING range, as redis-py parses it."""

    message_id: bytes
    consumer: bytes
    time_since_delivered: int
    times_delivered: int


def pending(reply: object) -> list[PendingEntry]:
    """An XPENDING range reply (start, end, count given)."""
    return cast("list[PendingEntry]", reply)
