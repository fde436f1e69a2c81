"""Redis key names of a namespace's event log: the one place they are spelled.

Every key of namespace `ns` is ``varro:{ns}:...``; the braces are a Redis
Cluster hash tag, so all of a namespace's keys live in one slot and the append
script (`events.append`) may touch them together.

``stream`` (the log; field ``e`` holds the encoded event, ``id``/``type``/
``date``/``h`` are for humans and cheap filtering), ``ids`` (event id -> entry
id), ``idx:<type>:<date>`` (event ids in append order), ``dates:<type>`` (dates
having that type), ``tip`` (hash of the last entry) and ``quarantine`` (foreign
entries moved off the stream). Other programs' state under the same prefix
(``shards``, the dispatcher's consumer groups) is named here too.
"""

from __future__ import annotations

import re

_NS_FROM_STREAM = re.compile(rb"^varro:\{([^}]+)\}:stream$")

STREAM_PATTERN = "varro:{*}:stream"
"""A SCAN pattern matching every namespace's stream key."""


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


def namespace_of(stream: bytes | str) -> str | None:
    """The namespace whose stream key this is, or None for any other key."""
    m = _NS_FROM_STREAM.match(stream if isinstance(stream, bytes) else stream.encode())
    return m.group(1).decode() if m else None
