"""Bytes <-> events: msgpack through msgspec, with upcasters for old versions.

Encoding is deterministic (struct field order, no omitted defaults), so the
sha256 of an entry's bytes is a stable link in the namespace's hash chain.

Decoding takes the fast typed path when the bytes are at the current schema
version; anything else goes through a plain dict so old versions can be
upcast step by step (`UPCASTERS[(type, v)]` turns version v into v+1) and
every failure becomes an `EventDecodeError` that names the problem.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from events import schema
from events.errors import EventDecodeError
from events.ids import sha256_hex
from events.schema import AnyEvent, Event


# (type, version) -> function turning that version's dict into version + 1.
# Add one together with a version bump in events.schema.CURRENT_VERSIONS and a
# golden fixture of the new version (the old version's fixture stays).
def _source_v1_to_v2(value: dict[str, Any]) -> dict[str, Any]:
    """DailyRunRequested v1 recorded its source as a string: "sample", "rss", "files:/a,/b", "replay:ns"."""
    spec = value.get("source")
    if not isinstance(spec, str):
        raise EventDecodeError(f"DailyRunRequested v1: source must be a string, got {type(spec).__name__}")
    kind, _, rest = spec.partition(":")
    if kind == "replay":
        source: dict[str, Any] = {"kind": kind, "namespace": rest}
    else:
        source = {"kind": kind, "paths": [p for p in rest.split(",") if p]}
    return {**value, "source": source}


UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("DailyRunRequested", 1): _source_v1_to_v2,
}

_encoder = msgspec.msgpack.Encoder()
_typed: msgspec.msgpack.Decoder[AnyEvent] = msgspec.msgpack.Decoder(AnyEvent)
_untyped = msgspec.msgpack.Decoder()


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def encode_builtins(value: dict[str, Any]) -> bytes:
    """Encode an event held as a plain dict (import); same bytes as the struct."""
    return _encoder.encode(value)


def entry_hash(encoded: bytes) -> str:
    """The chain link of one entry: sha256 of its bytes, which include `prev_hash`."""
    return sha256_hex(encoded)


def decode(data: bytes) -> AnyEvent:
    try:
        event = _typed.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _decode_slow(data)
    if event.schema_version != schema.CURRENT_VERSIONS[type(event).__name__]:
        return _decode_slow(data)
    return event


def decode_builtins(data: bytes) -> dict[str, Any]:
    """The stored event as a plain dict, exactly as written (no upcasting)."""
    try:
        value = _untyped.decode(data)
    except msgspec.DecodeError as exc:
        raise EventDecodeError(f"not a msgpack event ({len(data)} bytes): {exc}") from None
    if not isinstance(value, dict):
        raise EventDecodeError(f"not an event: msgpack {type(value).__name__}, expected a map")
    return value


def from_builtins(value: dict[str, Any]) -> AnyEvent:
    """Validate and upcast a plain-dict event to the current schema."""
    event_type = value.get("type")
    if not isinstance(event_type, str):
        raise EventDecodeError("event has no 'type' field")
    cls = schema.EVENT_TYPES.get(event_type)
    if cls is None:
        raise EventDecodeError(f"unknown event type {event_type!r} (known: {', '.join(sorted(schema.EVENT_TYPES))})")
    version = value.get("schema_version", 1)
    current = schema.CURRENT_VERSIONS[event_type]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise EventDecodeError(f"{event_type}: invalid schema_version {version!r}")
    if version > current:
        raise EventDecodeError(
            f"{event_type} schema_version {version} is newer than this code reads ({current}): "
            "upgrade varro to read this log"
        )
    while version < current:
        upcast = UPCASTERS.get((event_type, version))
        if upcast is None:
            raise EventDecodeError(f"{event_type}: no upcaster from schema_version {version}")
        version += 1
        value = {**upcast(dict(value)), "schema_version": version}
    try:
        return msgspec.convert(value, cls)
    except msgspec.ValidationError as exc:
        raise EventDecodeError(f"invalid {event_type} event (schema_version {version}): {exc}") from None


def _decode_slow(data: bytes) -> AnyEvent:
    return from_builtins(decode_builtins(data))
