"""What a day's stages produced, as content hashes: the basis of `varro verify`.

Two namespaces re-executed from the same recorded inputs on the same machine and
software must agree on every hash here. Ids, timestamps and namespace names are
deliberately left out: only the content each stage produced counts.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from events.ids import canonical_hash
from events.schema import EpochTrained, Event, HeadlinesFetched, Ranked, RolloutsGenerated


def output_hash(event: Event) -> tuple[str, str] | None:
    """(stage, hash of what the stage produced) for one event; None for non-stage events."""
    if isinstance(event, HeadlinesFetched):
        return "fetch", canonical_hash(msgspec.to_builtins(event.headlines))
    if isinstance(event, RolloutsGenerated):
        return "generate", event.artifact.sha256
    if isinstance(event, Ranked):
        return "rank", canonical_hash(msgspec.to_builtins(event.groups))
    if isinstance(event, EpochTrained):
        return "train", event.checkpoint.sha256
    return None


def output_hashes(events: Iterable[Event]) -> dict[tuple[str, str], str]:
    """(date, stage) -> output hash, the latest event winning where a stage was re-run."""
    out: dict[tuple[str, str], str] = {}
    for event in events:
        found = output_hash(event)
        if found is not None:
            out[(event.date, found[0])] = found[1]
    return out
