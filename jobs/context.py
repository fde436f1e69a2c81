"""What every job gets: config, the namespace's event store, the artifact store,
the model cache, and a bound logger.

A job reads its inputs only from events and the artifacts they point to, does
the work through `varro/`, and appends exactly one event. The conventions every
job follows:

* its event id comes from `events.ids.derive_event_id(ns, type, date, inputs)`
  where `inputs` are the ids/hashes of everything the output depends on, so a
  re-run on the same inputs finds its event already recorded and does no work;
* `force=True` adds ``force:<n>`` (n = events of that type and date so far) to
  the inputs and sets the event's `forced` flag: a new, marked event;
* wall-clock time never decides *what* to do; `date` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from events.ids import sha256_hex
from events.schema import CheckpointRef, EpochTrained

if TYPE_CHECKING:
    from events.store import EventStore
    from varro.artifacts import ArtifactStore
    from varro.config import VarroConfig
    from varro.model.cache import ModelCache


@dataclass
class JobContext:
    cfg: VarroConfig
    store: EventStore
    artifacts: ArtifactStore
    models: ModelCache
    correlation_id: str = ""
    log: Any = field(default_factory=structlog.get_logger)

    @property
    def ns(self) -> str:
        return self.store.ns


def force_input(store: EventStore, event_type: str, date: str) -> str:
    """The extra id input that makes a forced re-run a distinct event."""
    return f"force:{len(store.all_for(event_type, date))}"


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts, stable across processes and machines."""
    return int(sha256_hex("\x1f".join(str(p) for p in parts).encode())[:8], 16) & 0x7FFFFFFF


def parent_checkpoint(ctx: JobContext, date: str) -> CheckpointRef:
    """The checkpoint that was current before day `date` was trained.

    That is the output of the latest `EpochTrained` for an earlier date in this
    namespace, or the base model when nothing has been trained yet. Ties on a
    date (a forced re-train) resolve to the latest recorded event.
    """
    latest: EpochTrained | None = None
    for stored in ctx.store.read(types=["EpochTrained"]):
        event = stored.event
        if event.date < date and (latest is None or event.date >= latest.date):
            latest = event
    if latest is not None:
        return latest.checkpoint
    return ctx.models.base_ref()
