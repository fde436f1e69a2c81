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

`identify` is that prologue, written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from events.ids import derive_event_id, sha256_hex
from events.schema import CheckpointRef, EpochTrained
from events.store import Appended, EventStore

if TYPE_CHECKING:
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


@dataclass(frozen=True)
class Identity:
    """A job's event id and, when the same inputs already ran, the event they recorded."""

    event_id: str
    recorded: Appended | None


def identify(ctx: JobContext, event_type: str, date: str, inputs: list[str], *, force: bool) -> Identity:
    """Derive the event id from the job's inputs (plus the force marker) and look it up.

    A job whose identity comes back `recorded` returns it without doing any
    work: that is what makes every job idempotent.
    """
    if force:
        inputs = [*inputs, force_input(ctx.store, event_type, date)]
    event_id = derive_event_id(ctx.ns, event_type, date, inputs)
    existing = ctx.store.get(event_id)
    entry_id = None if existing is None else ctx.store.entry_id(event_id)
    if existing is None or entry_id is None:
        return Identity(event_id, None)
    ctx.log.info("already recorded", event_type=event_type, date=date, event_id=event_id)
    return Identity(event_id, Appended(entry_id=entry_id, event=existing, created=False))


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts, stable across processes and machines."""
    return int(sha256_hex("\x1f".join(str(p) for p in parts).encode())[:8], 16) & 0x7FFFFFFF


def parent_checkpoint(ctx: JobContext, date: str) -> CheckpointRef:
    """The checkpoint that was current before day `date` was trained.

    That is the output of the latest `EpochTrained` for an earlier date in this
    namespace, or the base model when nothing has been trained yet. Ties on a
    date (a forced re-train) resolve to the latest recorded event. It reads the
    store's per-type date index and one event, never the whole stream.
    """
    earlier = [d for d in ctx.store.dates("EpochTrained") if d < date]
    if earlier:
        latest = ctx.store.latest("EpochTrained", max(earlier))
        if isinstance(latest, EpochTrained):
            return latest.checkpoint
    return ctx.models.base_ref()


def trained_after(ctx: JobContext, date: str) -> bool:
    """Whether a later day than `date` has been trained (a backfill must not move the rolling link back)."""
    return any(d > date for d in ctx.store.dates("EpochTrained"))
