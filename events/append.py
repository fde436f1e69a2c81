"""Appending to a namespace's log: one server-side script per event, chained locally.

The script (`APPEND_LUA`), atomically: returns the existing entry when the
event id is already recorded (re-running an action is a no-op), refuses an
event whose predecessor (`events.schema.PRECONDITIONS`) is missing, extends the
hash chain only if its tip is still the one the client linked to, XADDs the
entry and updates the indexes (`events.keys`). An import (`events.transfer`)
runs the same script with the exported entry ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

import msgspec
import redis
from redis.commands.core import Script

from events import codec
from events.errors import ChainConflict, EventError, PreconditionError
from events.ids import validate_date
from events.keys import dates_key, ids_key, index_key, stream_key, tip_key
from events.provenance import utc_now
from events.replies import text
from events.schema import CURRENT_VERSIONS, GENESIS_HASH, PRECONDITIONS, AnyEvent, Event

MAX_ATTEMPTS = 200
"""Rounds a batch may retry from a moved chain tip before `ChainConflict`."""

# KEYS: stream, ids, tip, index(type,date), dates(type), predecessor indexes...
# ARGV: event id, encoded, expected tip, new tip, type, date, entry id ('*'), genesis
APPEND_LUA = """
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
class Appended:
    entry_id: str
    event: AnyEvent
    created: bool  # False: the event id was already recorded; this is that entry


@dataclass(frozen=True)
class ScriptCall:
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


def script_reply(reply: object) -> tuple[str, str]:
    """The append script's answer, a pair of bytes: (status, entry id | chain tip | predecessor number)."""
    status, value = cast("list[bytes]", reply)
    return text(status), text(value)


def script_call(
    ns: str,
    event_type: str,
    date: str,
    event_id: str,
    prev_hash: str,
    encoded: bytes,
    predecessor_dates: list[str],
    entry_id: str,
) -> ScriptCall:
    """The script call that appends `encoded` (linked to `prev_hash`) to namespace `ns`'s log.

    `predecessor_dates` are the dates of the event's PRECONDITIONS, in order;
    `entry_id` is "*" (a new entry) or an exported one (an import).
    """
    predecessors = PRECONDITIONS.get(event_type, ())
    keys = [stream_key(ns), ids_key(ns), tip_key(ns), index_key(ns, event_type, date), dates_key(ns, event_type)]
    keys += [index_key(ns, t, d) for (t, _), d in zip(predecessors, predecessor_dates, strict=True)]
    link = codec.entry_hash(encoded)
    args: list[str | bytes] = [event_id, encoded, prev_hash, link, event_type, date, entry_id, GENESIS_HASH]
    return ScriptCall(keys, args, event_id, ns, event_type, date, link, predecessors, predecessor_dates)


def event_call(event: AnyEvent) -> ScriptCall:
    """The script call that appends `event` as a new entry (its prev_hash already linked)."""
    event_type = type(event).__name__
    return script_call(
        event.ns,
        event_type,
        event.date,
        event.event_id,
        event.prev_hash,
        codec.encode(event),
        [getattr(event, field) for _, field in PRECONDITIONS.get(event_type, ())],
        "*",
    )


def stamp(event: AnyEvent, ns: str, code_version: str) -> AnyEvent:
    """`event` checked for namespace `ns`, stamped with when and by which code it is written."""
    if not isinstance(event, Event):
        raise EventError(f"not an event: {type(event).__name__}")
    if event.ns != ns:
        raise EventError(f"event {event.event_id} belongs to namespace {event.ns!r}, not {ns!r}")
    try:
        validate_date(event.date)
    except ValueError as exc:
        raise EventError(f"event {event.event_id}: {exc}") from None
    # Events are always written at their type's current schema version, so the
    # codec never runs a fresh event through an upcaster meant for old ones.
    return msgspec.structs.replace(
        event,
        recorded_at=utc_now(),
        code_version=code_version,
        schema_version=CURRENT_VERSIONS[type(event).__name__],
    )


class Appender:
    """Appends to namespace `ns`, remembering the last chain tip it saw (a hint the script corrects)."""

    def __init__(self, redis: redis.Redis, ns: str, *, code_version: str):
        self.redis = redis
        self.ns = ns
        self.code_version = code_version
        self.script: Script = redis.register_script(APPEND_LUA)
        self._tip: str | None = None

    def append_many(self, events: Iterable[AnyEvent], recorded: Callable[[str], AnyEvent]) -> list[Appended]:
        """Append several events in one round trip per attempt, chained locally.

        Each script still checks the tip it was linked to, so a concurrent writer
        only makes the rest of the batch retry from the tip the script reports.
        `recorded` reads the event of an entry id (for an event already recorded).
        """
        pending = [stamp(e, self.ns, self.code_version) for e in events]
        results: list[Appended] = []
        # The last tip this store saw is a hint that saves a round trip; the script corrects it.
        tip = self._tip or text(self.redis.get(tip_key(self.ns)) or GENESIS_HASH)
        for _ in range(MAX_ATTEMPTS):
            if not pending:
                return results
            prepared: list[tuple[AnyEvent, ScriptCall]] = []
            link = tip
            for event in pending:
                linked = msgspec.structs.replace(event, prev_hash=link)
                item = event_call(linked)
                prepared.append((linked, item))
                link = item.link
            pipe = self.redis.pipeline(transaction=False)
            for _, item in prepared:
                self.script(keys=item.keys, args=item.args, client=pipe)
            done = 0
            for (linked, item), reply in zip(prepared, pipe.execute(), strict=True):
                status, value = script_reply(reply)
                if status == "ok":
                    results.append(Appended(value, linked, True))
                    tip = item.link
                elif status == "dup":
                    results.append(Appended(value, recorded(value), False))
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
        raise ChainConflict(f"namespace {self.ns!r}: chain tip kept moving for {MAX_ATTEMPTS} attempts")

    def run(self, call: ScriptCall) -> tuple[str, str]:
        """One script call on its own (an import's entries go one at a time): the script's reply."""
        return script_reply(self.script(keys=call.keys, args=call.args))
