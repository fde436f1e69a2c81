"""Consumer groups on a namespace's stream: at-least-once delivery with reclaim
and a dead-letter stream.

A consumer acks an entry only after its effect is durable; an entry left
pending by a consumer that died is reclaimed by another one once it has been
idle for `min_idle_ms` (XAUTOCLAIM). An entry that cannot be decoded, or that
has been delivered more than `max_deliveries` times, goes to the group's
dead-letter stream with the reason and is acked, so one poison entry never
blocks the rest of the log. So does a foreign entry: one the store's append
script did not write (its ``ids`` index does not name this entry), and a valid
event whose `ns` is not the stream's namespace, so nobody acts on an entry
another program added, nor on a namespace it was not read from.

Reclaim cannot tell a dead consumer from a slow one: keep `min_idle_ms` above
the longest time a consumer holds an entry before acking it.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
import structlog

from events import codec, replies
from events.errors import EventDecodeError, EventError
from events.keys import ids_key, key, stream_key
from events.provenance import utc_now
from events.replies import text
from events.schema import AnyEvent

log = structlog.get_logger(__name__)


def dead_letter_key(ns: str, group: str) -> str:
    return key(ns, "dead", group)


def failures_key(ns: str, group: str) -> str:
    return key(ns, "failures", group)


@dataclass(frozen=True)
class Delivery:
    entry_id: str
    event: AnyEvent
    deliveries: int


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    reason: str
    deliveries: int
    raw: bytes
    failed_at: str


class Consumer:
    """One named consumer `name` in consumer group `group` of namespace `ns`."""

    def __init__(
        self, redis: redis.Redis, ns: str, group: str, name: str, *, max_deliveries: int = 5, min_idle_ms: int = 60_000
    ):
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1, got {max_deliveries}")
        self.redis = redis
        self.ns = ns
        self.group = group
        self.name = name
        self.max_deliveries = max_deliveries
        self.min_idle_ms = min_idle_ms
        self.stream = stream_key(ns)

    def ensure_group(self, start_id: str = "0") -> None:
        """Create the group (and an empty stream) unless it exists; "0" = from the first entry."""
        try:
            self.redis.xgroup_create(self.stream, self.group, id=start_id, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, count: int = 10, block_ms: int | None = 1000) -> list[Delivery]:
        """Reclaimed stale entries first, then new ones; blocks only when there is nothing to reclaim."""
        try:
            rows = self._reclaim(count)
            if len(rows) < count:
                reply = self.redis.xreadgroup(
                    self.group, self.name, {self.stream: ">"}, count=count - len(rows), block=None if rows else block_ms
                )
                for _, new_rows in replies.stream_rows(reply):
                    rows += [(text(entry_id), fields, 1) for entry_id, fields in new_rows]
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                raise EventError(
                    f"consumer group {self.group!r} does not exist on namespace {self.ns!r}: call ensure_group() first"
                ) from None
            raise
        deliveries = []
        recorded = self.redis.hmget(ids_key(self.ns), [f.get(b"id") or b"" for _, f, _ in rows]) if rows else []
        for (entry_id, fields, delivered), indexed in zip(rows, recorded, strict=True):
            raw = fields.get(b"e", b"")
            if delivered > self.max_deliveries:
                last = self.redis.hget(failures_key(self.ns, self.group), entry_id)
                reason = f"delivered {delivered} times (max {self.max_deliveries})"
                self._dead_letter(entry_id, raw, f"{reason}; last failure: {text(last)}" if last else reason, delivered)
                continue
            try:
                if b"e" not in fields:
                    raise EventDecodeError("entry has no event payload ('e' field)")
                event = codec.decode(raw)
            except EventDecodeError as exc:
                self._dead_letter(entry_id, raw, f"undecodable: {exc}", delivered)
                continue
            if event.ns != self.ns:
                reason = f"foreign: event {event.event_id} belongs to namespace {event.ns!r}, not {self.ns!r}"
                self._dead_letter(entry_id, raw, reason, delivered)
                continue
            if indexed is None or text(indexed) != entry_id:
                where = f"recorded at entry {text(indexed)}" if indexed is not None else "not recorded"
                reason = f"foreign: entry not written by Varro's append (event {event.event_id} is {where})"
                self._dead_letter(entry_id, raw, reason, delivered)
                continue
            deliveries.append(Delivery(entry_id, event, delivered))
        return deliveries

    def _reclaim(self, count: int) -> list[tuple[str, dict[bytes, bytes], int]]:
        reply = self.redis.xautoclaim(self.stream, self.group, self.name, self.min_idle_ms, start_id="0-0", count=count)
        rows, deleted = replies.claimed(reply)
        claimed = [(text(entry_id), fields) for entry_id, fields in rows if fields is not None]
        for gone in deleted:
            # pending entries deleted from the stream: nothing left to process
            self.redis.xack(self.stream, self.group, gone)
        if not claimed:
            return []
        counts = {
            text(p["message_id"]): int(p["times_delivered"])
            for p in replies.pending(
                self.redis.xpending_range(
                    self.stream,
                    self.group,
                    min=claimed[0][0],
                    max=claimed[-1][0],
                    count=len(claimed) * 2 + 10,
                    consumername=self.name,
                )
            )
        }
        for entry_id, _ in claimed:
            log.info(
                "reclaimed stale entry",
                ns=self.ns,
                group=self.group,
                consumer=self.name,
                entry_id=entry_id,
                deliveries=counts.get(entry_id, 1),
            )
        return [(entry_id, fields, counts.get(entry_id, 1)) for entry_id, fields in claimed]

    def ack(self, entry_id: str) -> None:
        """Mark `entry_id` done. Call only once its effect is durable."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(self.stream, self.group, entry_id)
        pipe.hdel(failures_key(self.ns, self.group), entry_id)
        pipe.execute()

    def fail(self, delivery: Delivery, reason: str) -> bool:
        """Record why handling failed; the entry is retried after `min_idle_ms`, or
        dead-lettered (and acked) once it has had `max_deliveries` deliveries."""
        if delivery.deliveries >= self.max_deliveries:
            self._dead_letter(delivery.entry_id, self._raw(delivery.entry_id), reason, delivery.deliveries)
            return True
        self.redis.hset(failures_key(self.ns, self.group), delivery.entry_id, reason)
        log.warning(
            "event handling failed; will retry",
            ns=self.ns,
            group=self.group,
            entry_id=delivery.entry_id,
            event_id=delivery.event.event_id,
            deliveries=delivery.deliveries,
            reason=reason,
        )
        return False

    def _raw(self, entry_id: str) -> bytes:
        rows = replies.rows(self.redis.xrange(self.stream, entry_id, entry_id))
        return rows[0][1].get(b"e", b"") if rows else b""

    def _dead_letter(self, entry_id: str, raw: bytes, reason: str, deliveries: int) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(
            dead_letter_key(self.ns, self.group),
            {
                "entry_id": entry_id,
                "reason": reason,
                "deliveries": deliveries,
                "raw": raw,
                "failed_at": utc_now(),
            },
        )
        pipe.xack(self.stream, self.group, entry_id)
        pipe.hdel(failures_key(self.ns, self.group), entry_id)
        pipe.execute()
        log.error(
            "entry dead-lettered", ns=self.ns, group=self.group, entry_id=entry_id, deliveries=deliveries, reason=reason
        )

    def dead_letters(self) -> list[DeadLetter]:
        return [
            DeadLetter(
                entry_id=text(f[b"entry_id"]),
                reason=text(f[b"reason"]),
                deliveries=int(f[b"deliveries"]),
                raw=f[b"raw"],
                failed_at=text(f[b"failed_at"]),
            )
            for _, f in replies.rows(self.redis.xrange(dead_letter_key(self.ns, self.group)))
        ]

    def pending(self) -> int:
        """Entries delivered to some consumer of the group and not yet acked."""
        return int(self.redis.xpending(self.stream, self.group)["pending"])
