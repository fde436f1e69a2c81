"""Why a checkpoint is what it is: the chain of epochs from it back to the base model.

Each `EpochTrained` names its parent checkpoint and the `Ranked` and
`RolloutsGenerated` events it learnt from, so walking parents through the log
answers an auditor's question without opening any checkpoint. The walk always
moves to a parent produced *earlier* in the log (a parent exists before its
child is trained), so it ends even when an epoch left the weights unchanged and
a checkpoint is its own parent.

Also the days x stages grid of what the log holds, which `varro status`
overlays with RQ's running/failed states.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from events.errors import PermanentError
from events.ids import validate_date
from events.schema import (
    AnyEvent,
    DailyRunRequested,
    EpochMetrics,
    EpochTrained,
    HeadlinesFetched,
    Ranked,
    RolloutsGenerated,
)

# The pipeline's stages in chain order and the event that marks each one done for a date.
STAGE_EVENTS: dict[str, type] = {
    "fetch": HeadlinesFetched,
    "generate": RolloutsGenerated,
    "rank": Ranked,
    "train": EpochTrained,
}
DONE = "done"
MISSING = "missing"


class LineageError(PermanentError, ValueError):
    """A checkpoint reference names nothing, or more than one thing, in the log."""


class LineageStep(msgspec.Struct, frozen=True, kw_only=True):
    """One epoch in a checkpoint's ancestry: what it was trained on and what it produced."""

    date: str
    checkpoint_sha256: str
    parent_sha256: str
    base_model: str
    epoch_event_id: str
    ranked_event_id: str
    rollouts_event_id: str
    data_hashes: tuple[str, ...]
    variant: str
    pi_old: str
    config_hash: str
    forced: bool
    metrics: EpochMetrics


class CheckpointHistory:
    """Which `EpochTrained` produced each checkpoint, in append order."""

    def __init__(self, events: Iterable[AnyEvent]):
        self._producers: dict[str, list[tuple[int, EpochTrained]]] = {}
        self._position: dict[str, int] = {}
        self.known: set[str] = set()
        for position, event in enumerate(events):
            if isinstance(event, RolloutsGenerated):
                self.known.add(event.checkpoint.sha256)
            elif isinstance(event, EpochTrained) and event.event_id not in self._position:
                self._position[event.event_id] = position
                self._producers.setdefault(event.checkpoint.sha256, []).append((position, event))
                self.known.update((event.checkpoint.sha256, event.parent_checkpoint.sha256))

    def resolve(self, ref: str) -> str:
        """The full sha256 of the one known checkpoint that `ref` (a sha or prefix) names."""
        prefix = ref.strip().lower()
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            raise LineageError(f"{ref!r} is not a checkpoint sha256 or a hex prefix of one")
        matches = sorted(sha for sha in self.known if sha.startswith(prefix))
        if not matches:
            raise LineageError(
                f"unknown checkpoint {ref!r}: none of the {len(self.known)} checkpoints named in this log "
                "starts with it"
            )
        if len(matches) > 1:
            shown = ", ".join(m[:16] for m in matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise LineageError(
                f"ambiguous checkpoint prefix {ref!r}: it matches {len(matches)} checkpoints ({shown}); "
                "give more characters"
            )
        return matches[0]

    def producer(self, sha256: str, *, before: int | None = None) -> EpochTrained | None:
        """The latest epoch that produced `sha256`, only among those appended before position `before`."""
        candidates = [
            epoch for position, epoch in self._producers.get(sha256, ()) if before is None or position < before
        ]
        return candidates[-1] if candidates else None

    def walk(self, epoch: EpochTrained) -> list[LineageStep]:
        """`epoch` and its ancestors, newest first; the last step's parent is the root."""
        if epoch.event_id not in self._position:
            raise LineageError(f"epoch {epoch.event_id} ({epoch.date}) is not in this log")
        steps: list[LineageStep] = []
        current: EpochTrained | None = epoch
        while current is not None:
            steps.append(_step(current))
            current = self.producer(current.parent_checkpoint.sha256, before=self._position[current.event_id])
        return steps


def lineage(events: Iterable[AnyEvent], checkpoint_sha_or_prefix: str) -> list[LineageStep]:
    """The epochs behind a checkpoint, newest first, back to the base model.

    `events` in append order. An empty list means the checkpoint was not trained
    in this log: it is the base model (or where a fork started).
    """
    history = CheckpointHistory(events)
    epoch = history.producer(history.resolve(checkpoint_sha_or_prefix))
    return [] if epoch is None else history.walk(epoch)


def day_grid(events: Iterable[AnyEvent], dates: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
    """date -> stage -> "done" | "missing", from the log alone.

    Rows are `dates` when given (e.g. a backfill range), otherwise every date the
    log mentions, including days only requested so far.
    """
    log = list(events)
    namespaces = sorted({event.ns for event in log})
    if len(namespaces) > 1:
        raise LineageError(f"events from several namespaces ({', '.join(namespaces)}): grid one namespace at a time")
    done = {(stage, event.date) for event in log for stage, cls in STAGE_EVENTS.items() if isinstance(event, cls)}
    if dates is None:
        tracked = (DailyRunRequested, *STAGE_EVENTS.values())
        rows = sorted({event.date for event in log if isinstance(event, tracked)})
    else:
        rows = sorted({validate_date(date) for date in dates})
    return {date: {stage: DONE if (stage, date) in done else MISSING for stage in STAGE_EVENTS} for date in rows}


def _step(epoch: EpochTrained) -> LineageStep:
    return LineageStep(
        date=epoch.date,
        checkpoint_sha256=epoch.checkpoint.sha256,
        parent_sha256=epoch.parent_checkpoint.sha256,
        base_model=epoch.checkpoint.base_model,
        epoch_event_id=epoch.event_id,
        ranked_event_id=epoch.ranked_event_id,
        rollouts_event_id=epoch.rollouts_event_id,
        data_hashes=tuple(epoch.data_hashes),
        variant=epoch.variant,
        pi_old=epoch.pi_old,
        config_hash=epoch.config_hash,
        forced=epoch.forced,
        metrics=epoch.metrics,
    )
