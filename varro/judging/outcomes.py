"""Which headlines count as what happened: the outcome day of a prediction day.

Predictions of date D are judged against the headlines of D+1, or of any date
H given explicitly (recovery, backfill). The outcomes are only ever read from
what was recorded for that day: a missing day is refused, never fetched now
and stamped with a past date (the original system's defect).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from events.errors import PermanentError
from events.ids import shift_date, validate_date
from events.schema import Headline


class OutcomesMissing(PermanentError, LookupError):
    """No headlines are recorded for the outcome date; fetch that day first."""

    def __init__(self, outcome_date: str, prediction_date: str, ns: str = ""):
        where = f" in namespace {ns!r}" if ns else ""
        super().__init__(
            f"no headlines recorded for outcome date {outcome_date}{where}, needed to judge the "
            f"predictions of {prediction_date}; fetch {outcome_date} first (Varro never fetches "
            "a past date live) or pass another outcome date"
        )
        self.outcome_date = outcome_date


class NoOutcomes(PermanentError, ValueError):
    """Nothing is left to judge against once the prediction day's own headlines are removed."""


def outcome_date_for(prediction_date: str, override: str | None = None) -> str:
    """D+1 by default, or the explicitly given date H."""
    validate_date(prediction_date)
    return validate_date(override) if override is not None else shift_date(prediction_date, 1)


def normalise(text: str) -> str:
    """Case-, punctuation- and spacing-insensitive form used to spot the same headline."""
    return " ".join(re.findall(r"[a-z0-9]+", text.casefold()))


def outcome_headlines(outcomes: Iterable[Headline], prediction_day: Iterable[Headline]) -> list[Headline]:
    """The outcome headlines minus the prediction day's own and minus repeats.

    A headline that was already known on the prediction day is not something
    that happened afterwards, so it is removed by id and by normalised text.
    Order is kept (first occurrence wins).
    """
    known = list(prediction_day)
    seen_ids = {h.id for h in known}
    seen_texts = {normalise(h.text) for h in known}
    kept = []
    for headline in outcomes:
        text = normalise(headline.text)
        if headline.id in seen_ids or text in seen_texts or not text:
            continue
        seen_ids.add(headline.id)
        seen_texts.add(text)
        kept.append(headline)
    return kept


def require_outcomes(kept: Sequence[Headline], outcome_date: str, prediction_date: str) -> Sequence[Headline]:
    if not kept:
        raise NoOutcomes(
            f"no outcome headlines for {outcome_date} remain after removing those already seen on "
            f"{prediction_date}; nothing to judge the predictions against"
        )
    return kept
