"""The held-out panel: headlines no checkpoint is trained on, with what happened next.

How the panel is kept out of training: a deterministic share of headlines
(`generation.holdout_share`, default 1/8) is never generated on, decided by a
hash of the headline's id. The id is a hash of the normalised text, so a story
held out on one day is held out on every day it recurs. Their roll-outs never
exist, so no `Ranked` or `EpochTrained` can contain them; the evaluation
checks it against the log anyway (varro.evaluation.exclusion), because a
namespace may have run with a different share, or none, or had a day so small
that nothing could be held out.

A panel item is a held-out headline of day D with the headlines of day D+1 as
its outcomes (its own day's texts removed, as for ranking). The outcomes are
the world's next day, shared with training's judge by design; what must never
be trained on is the item's own headline, the model's input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from events.errors import PermanentError
from events.ids import canonical_hash, sha256_hex, shift_date
from events.schema import Headline
from varro.judging.outcomes import outcome_headlines

_HOLDOUT_SALT = "varro-holdout"


class PanelError(PermanentError, ValueError):
    """A panel cannot be built, read, or used as asked; the message says why."""


class PanelItem(msgspec.Struct, frozen=True, kw_only=True):
    date: str
    headline: Headline
    outcome_date: str
    outcomes: list[str]


class Panel(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    holdout_share: float
    items: list[PanelItem]

    @property
    def dates(self) -> list[str]:
        return sorted({item.date for item in self.items})


def held_out(headline_id: str, share: float) -> bool:
    """Whether a headline belongs to the panel: a stable hash of its id, below `share`."""
    if share <= 0:
        return False
    return int(sha256_hex(f"{_HOLDOUT_SALT}\x1f{headline_id}".encode())[:8], 16) < share * 2**32


def training_headlines(headlines: Iterable[Headline], share: float) -> list[Headline]:
    """The day's headlines that generation (and so training) may use.

    A day whose every headline would be held out (a day of one or two
    headlines) keeps them all: the hold-out must never leave a day with nothing
    to learn from. The evaluation's lineage check refuses a panel holding such a story.
    """
    day = list(headlines)
    kept = [h for h in day if not held_out(h.id, share)]
    return kept or day


def build_panel(days: Mapping[str, list[Headline]], *, share: float, name: str) -> Panel:
    """Every held-out headline of each day whose next day is known, with that day as its outcomes."""
    if share <= 0:
        raise PanelError("generation.holdout_share is 0: no headline is held out, so there is no panel")
    items: list[PanelItem] = []
    seen: set[str] = set()  # a story held out on several days is one item, on its first day
    for date in sorted(days):
        outcome_date = shift_date(date, 1)
        if outcome_date not in days:
            continue
        outcomes = [h.text for h in outcome_headlines(days[outcome_date], days[date])]
        if not outcomes:
            continue
        for h in days[date]:
            if held_out(h.id, share) and h.id not in seen:
                seen.add(h.id)
                items.append(PanelItem(date=date, headline=h, outcome_date=outcome_date, outcomes=outcomes))
    if not items:
        raise PanelError(
            f"no held-out headline with a next day among {len(days)} day(s) "
            f"({', '.join(sorted(days)) or 'none'}): a panel needs consecutive days"
        )
    return Panel(name=name, holdout_share=share, items=items)


def encode(panel: Panel) -> bytes:
    return msgspec.json.encode(panel, order="sorted")


def decode(data: bytes, *, origin: str = "panel") -> Panel:
    try:
        panel = msgspec.json.decode(data, type=Panel)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PanelError(f"{origin} is not a Varro panel: {exc}") from None
    if not panel.items:
        raise PanelError(f"{origin} has no items")
    return panel


def panel_hash(panel: Panel) -> str:
    return canonical_hash(msgspec.to_builtins(panel))
