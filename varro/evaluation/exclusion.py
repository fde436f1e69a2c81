"""Which headlines a checkpoint was trained on, from the log alone.

A checkpoint's lineage (varro.lineage) names every epoch behind it; each epoch
names the `RolloutsGenerated` it learnt from, whose groups name the headlines
that were prompts. A panel is usable for a checkpoint only if none of its
headlines is among them.
"""

from __future__ import annotations

from collections.abc import Iterable

from events.errors import PermanentError
from events.schema import AnyEvent, RolloutsGenerated
from varro.evaluation.panel import Panel
from varro.lineage import CheckpointHistory


class PanelLeak(PermanentError, ValueError):
    """A checkpoint under evaluation was trained on a panel headline."""


def trained_headlines(events: Iterable[AnyEvent], checkpoint_sha256: str) -> dict[str, str]:
    """headline id -> the day its roll-outs were trained on, over the checkpoint's whole lineage."""
    log = list(events)
    history = CheckpointHistory(log)
    epoch = history.producer(checkpoint_sha256)
    if epoch is None:
        return {}
    generated = {e.event_id: e for e in log if isinstance(e, RolloutsGenerated)}
    out: dict[str, str] = {}
    for step in history.walk(epoch):
        rollouts = generated.get(step.rollouts_event_id)
        if rollouts is None:
            raise PanelLeak(
                f"epoch {step.epoch_event_id} ({step.date}) names roll-outs {step.rollouts_event_id} that are not "
                "in this log, so what it was trained on cannot be checked"
            )
        for group in rollouts.groups:
            out.setdefault(group.headline_id, step.date)
    return out


def check_held_out(events: Iterable[AnyEvent], panel: Panel, checkpoint_sha256: str, label: str) -> None:
    """Refuse a panel that a checkpoint trained on, naming the first such headline."""
    trained = trained_headlines(events, checkpoint_sha256)
    for item in panel.items:
        if item.headline.id in trained:
            raise PanelLeak(
                f"{label} ({checkpoint_sha256[:12]}) was trained on panel headline {item.headline.text!r} "
                f"(roll-outs of {trained[item.headline.id]}): this panel is not held out for it"
            )
