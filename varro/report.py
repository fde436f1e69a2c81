"""The per-day summary table, as the original system printed it, from the log alone.

One row per logical date. Each number belongs to that date only: the reward
columns are the day stats of `Ranked(date)` (the roll-outs generated on that
date, judged against the next day's headlines), and the training columns are
the one epoch trained on those roll-outs. The original's figures were
cumulative, so they rose by arithmetic alone; these never are. A stage that
has not happened yet is None (rendered as "—"), never 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import msgspec
from rich.table import Table

from events.schema import AnyEvent, EpochTrained, HeadlinesFetched, Ranked, RolloutsGenerated
from varro.projections import fold_latest

NOT_YET = "—"
LEGEND = (
    "Every value is for that day alone, never cumulative. Rewards are scaled ranks in [0, 1], "
    "1 - (rank-1)/(G-1), of the roll-outs generated on that date, judged against the outcome date's headlines; "
    "the training columns describe the one GSPO epoch on those roll-outs (KL to π_old: k3 estimate; "
    "clip fraction: low + high; improvement as defined by the trainer). "
    f"{NOT_YET} = the stage has not run for that date."
)


class DayRow(msgspec.Struct, frozen=True, kw_only=True):
    date: str
    headlines: int | None = None
    rollouts: int | None = None
    avg_structure_score: float | None = None
    outcome_date: str | None = None
    reward_n: int | None = None
    reward_avg: float | None = None
    reward_min: float | None = None
    reward_max: float | None = None
    reward_negatives: int | None = None
    train_steps: int | None = None
    kl_old: float | None = None
    clip_frac: float | None = None
    improvement: float | None = None


def day_rows(events: Iterable[AnyEvent]) -> list[DayRow]:
    """One row per date of one namespace's log (append order), from each stage's latest event."""
    latest = fold_latest(events)
    rows = []
    for date in sorted({date for (_, date) in latest}):
        fields: dict[str, object] = {}
        if (item := latest.get((HeadlinesFetched, date))) is not None:
            fields["headlines"] = len(item.event.headlines)
        if (item := latest.get((RolloutsGenerated, date))) is not None:
            stats = item.event.stats
            fields.update(rollouts=stats.rollouts, avg_structure_score=stats.avg_structure_score)
        if (item := latest.get((Ranked, date))) is not None:
            stats = item.event.stats
            fields.update(
                outcome_date=item.event.outcome_date,
                reward_n=stats.n,
                reward_avg=stats.avg,
                reward_min=stats.min,
                reward_max=stats.max,
                reward_negatives=stats.negatives,
            )
        if (item := latest.get((EpochTrained, date))) is not None:
            metrics = item.event.metrics
            fields.update(
                train_steps=metrics.steps,
                kl_old=metrics.kl_old_k3,
                clip_frac=metrics.clip_frac_low + metrics.clip_frac_high,
                improvement=metrics.improvement,
            )
        rows.append(DayRow(date=date, **fields))
    return rows


def render_table(rows: Iterable[DayRow], *, title: str = "Varro: per-day summary") -> Table:
    table = Table(title=title, caption=LEGEND, caption_justify="left")
    for header, _, _ in _COLUMNS:
        dated = header in ("Date", "Judged vs")
        table.add_column(header, justify="left" if dated else "right", no_wrap=dated, min_width=10 if dated else None)
    for row in rows:
        table.add_row(*_cells(row))
    return table


def summary_markdown(rows: Iterable[DayRow], *, title: str = "Per-day summary") -> str:
    """The same table as GitHub-flavoured Markdown, for a README-like report."""
    rows = list(rows)
    lines = [f"## {title}", ""]
    if not rows:
        return "\n".join([*lines, "_No days recorded yet._", ""])
    headers = [header for header, _, _ in _COLUMNS]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join(":---" if h in ("Date", "Judged vs") else "---:" for h in headers) + "|")
    lines.extend("| " + " | ".join(_cells(row)) + " |" for row in rows)
    return "\n".join([*lines, "", LEGEND, ""])


def _cells(row: DayRow) -> list[str]:
    return [NOT_YET if (value := getattr(row, attr)) is None else fmt(value) for _, attr, fmt in _COLUMNS]


def _count(value: int) -> str:
    return str(value)


def _fraction(value: float) -> str:
    return f"{value:.3f}"


def _small(value: float) -> str:
    return f"{value:.2e}"


def _signed(value: float) -> str:
    return f"{value:+.4f}"


# (header, DayRow attribute, formatter)
_COLUMNS: tuple[tuple[str, str, Callable], ...] = (
    ("Date", "date", str),
    ("Headlines", "headlines", _count),
    ("Roll-outs", "rollouts", _count),
    ("Structure (avg)", "avg_structure_score", _fraction),
    ("Judged vs", "outcome_date", str),
    ("Reward n", "reward_n", _count),
    ("Reward avg", "reward_avg", _fraction),
    ("Reward min", "reward_min", _fraction),
    ("Reward max", "reward_max", _fraction),
    ("Negatives", "reward_negatives", _count),
    ("Steps", "train_steps", _count),
    ("KL π_old", "kl_old", _small),
    ("Clip frac", "clip_frac", _fraction),
    ("Improvement", "improvement", _signed),
)
