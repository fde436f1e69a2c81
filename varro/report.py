"""The per-day summary table, as the original system printed it, from the log alone.

One row per logical date. Each number belongs to that date only: the reward
columns are the day stats of `Ranked(date)` (the roll-outs generated on that
date, judged against the next day's headlines), and the training columns are
the one epoch trained on those roll-outs. The original's figures were
cumulative, so they rose by arithmetic alone; these never are. A stage that
has not happened yet is None (rendered as "—"), never 0.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec
from rich.table import Table

from events.schema import (
    AnyEvent,
    DailyRunRequested,
    EpochTrained,
    Evaluated,
    HeadlinesFetched,
    Ranked,
    RolloutsGenerated,
)
from varro.projections import Latest, fold_latest

_DAY_TYPES = (DailyRunRequested, HeadlinesFetched, RolloutsGenerated, Ranked, EpochTrained)

NOT_YET = "—"
LEGEND = (
    "Every value is for that day alone, never cumulative. Rewards are scaled ranks in [0, 1], "
    "1 - (rank-1)/(G-1), of the roll-outs generated on that date, judged against the outcome date's headlines; "
    "the training columns describe the one GSPO epoch on those roll-outs (KL to π_old: k3 estimate; "
    "clip fraction: low + high; improvement as defined by the trainer). Judge raw: the judge's unscaled score. "
    "Fallback: share of groups the fallback judge ranked. Win vs base: the day's checkpoint against the base "
    "model on held-out panel headlines (B's share of pairs won, ties half; 0.5 = no difference). "
    f"{NOT_YET} = the stage has not run for that date."
)


class DayRow(msgspec.Struct, frozen=True, kw_only=True):
    ns: str = ""
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
    judge_raw: float | None = None  # the judge's unscaled score, mean over the day's roll-outs that have one
    fallback_share: float | None = None
    retries: int | None = None
    position_bias: float | None = None  # largest |pick rate - chance| over the shown positions
    agreement: float | None = None
    train_steps: int | None = None
    reward_unscaled: float | None = None
    kl_old: float | None = None
    kl_ref: float | None = None
    clip_frac: float | None = None
    clip_low: float | None = None
    clip_high: float | None = None
    improvement: float | None = None
    win_vs_base: float | None = None
    win_vs_base_low: float | None = None
    win_vs_base_high: float | None = None
    win_vs_parent: float | None = None


def day_rows(events: Iterable[AnyEvent]) -> list[DayRow]:
    """One row per date of one namespace's log (append order), from each stage's latest event."""
    log = list(events)
    latest = fold_latest(log)
    ns = log[0].ns if log else ""
    evaluations = latest_evaluations(log)
    rows = []
    for date in sorted({date for (cls, date) in latest if cls in _DAY_TYPES}):
        fields: dict[str, object] = {}
        fetched, generated, ranked, trained = (_latest(latest, cls, date) for cls in _DAY_TYPES[1:])
        if isinstance(fetched, HeadlinesFetched):
            fields["headlines"] = len(fetched.headlines)
        if isinstance(generated, RolloutsGenerated):
            stats = generated.stats
            fields.update(rollouts=stats.rollouts, avg_structure_score=stats.avg_structure_score)
        if isinstance(ranked, Ranked):
            fields.update(_ranked_fields(ranked))
        if isinstance(trained, EpochTrained):
            metrics = trained.metrics
            fields.update(
                train_steps=metrics.steps,
                reward_unscaled=metrics.avg_reward_unscaled,
                kl_old=metrics.kl_old_k3,
                kl_ref=metrics.kl_ref_k3,
                clip_frac=metrics.clip_frac_low + metrics.clip_frac_high,
                clip_low=metrics.clip_frac_low,
                clip_high=metrics.clip_frac_high,
                improvement=metrics.improvement,
            )
        if (ev := evaluations.get(("vs_base", date))) is not None:
            fields.update(
                win_vs_base=ev.win_rate.value, win_vs_base_low=ev.win_rate.low, win_vs_base_high=ev.win_rate.high
            )
        if (ev := evaluations.get(("vs_parent", date))) is not None:
            fields["win_vs_parent"] = ev.win_rate.value
        rows.append(msgspec.convert({"ns": ns, "date": date, **fields}, DayRow))
    return rows


def _latest(latest: Mapping[tuple[type, str], Latest], cls: type, date: str) -> AnyEvent | None:
    item = latest.get((cls, date))
    return None if item is None else item.event


def latest_evaluations(events: Iterable[AnyEvent]) -> dict[tuple[str, str], Evaluated]:
    """(purpose, date) -> the latest `Evaluated` of that purpose for the day."""
    out: dict[tuple[str, str], Evaluated] = {}
    for event in events:
        if isinstance(event, Evaluated):
            out[(event.purpose, event.date)] = event
    return out


def _ranked_fields(event: Ranked) -> dict[str, object]:
    stats = event.stats
    raw = [s for g in event.groups for s in g.raw_scores if s is not None]
    bias = [abs(p - c) for p, c in zip(stats.position_pick_rate, stats.position_chance, strict=False)]
    return {
        "outcome_date": event.outcome_date,
        "reward_n": stats.n,
        "reward_avg": stats.avg,
        "reward_min": stats.min,
        "reward_max": stats.max,
        "reward_negatives": stats.negatives,
        "judge_raw": sum(raw) / len(raw) if raw else None,
        "fallback_share": 1.0 - stats.primary_share,
        "retries": sum(g.retries for g in event.groups),
        "position_bias": max(bias) if bias else None,
        "agreement": stats.agreement,
    }


def report_rows(logs: Mapping[str, Iterable[AnyEvent]]) -> list[DayRow]:
    """Rows of several namespaces side by side (namespace order as given, dates ascending)."""
    rows: list[DayRow] = []
    for ns, events in logs.items():
        rows.extend(msgspec.structs.replace(row, ns=ns) for row in day_rows(events))
    return rows


def render_table(
    rows: Iterable[DayRow], *, title: str = "Varro: per-day summary", columns: Sequence[Column] | None = None
) -> Table:
    """A rich table; every header is kept whole (no column narrower than its header), in a pipe too."""
    rows = list(rows)
    columns = _with_ns(columns or RUN_COLUMNS, rows)
    table = Table(title=title, caption=LEGEND, caption_justify="left")
    for header, _, _ in columns:
        left = header in _LEFT
        table.add_column(header, justify="left" if left else "right", no_wrap=True, min_width=len(header))
    for row in rows:
        table.add_row(*_cells(row, columns))
    return table


def summary_markdown(
    rows: Iterable[DayRow], *, title: str = "Per-day summary", columns: Sequence[Column] | None = None
) -> str:
    """The same table as GitHub-flavoured Markdown, for a README-like report."""
    rows = list(rows)
    columns = _with_ns(columns or RUN_COLUMNS, rows)
    lines = [f"## {title}", ""]
    if not rows:
        return "\n".join([*lines, "_No days recorded yet._", ""])
    headers = [header for header, _, _ in columns]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join(":---" if h in _LEFT else "---:" for h in headers) + "|")
    lines.extend("| " + " | ".join(_cells(row, columns)) + " |" for row in rows)
    return "\n".join([*lines, "", LEGEND, ""])


def summary_csv(rows: Iterable[DayRow]) -> str:
    """Every field of every row, unformatted (empty = the stage has not run)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = list(DayRow.__struct_fields__)
    writer.writerow(names)
    for row in rows:
        writer.writerow(["" if (v := getattr(row, n)) is None else v for n in names])
    return out.getvalue()


def summary_json(rows: Iterable[DayRow]) -> str:
    return msgspec.json.format(msgspec.json.encode(list(rows)), indent=2).decode() + "\n"


def _with_ns(columns: Sequence[Column], rows: Sequence[DayRow]) -> Sequence[Column]:
    """A namespace column only when the rows come from more than one."""
    if len({row.ns for row in rows}) > 1:
        return [("Namespace", "ns", str), *columns]
    return columns


def _cells(row: DayRow, columns: Sequence[Column]) -> list[str]:
    return [NOT_YET if (value := getattr(row, attr)) is None else fmt(value) for _, attr, fmt in columns]


def _count(value: int) -> str:
    return str(value)


def _fraction(value: float) -> str:
    return f"{value:.3f}"


def _small(value: float) -> str:
    return f"{value:.2e}"


def _signed(value: float) -> str:
    return f"{value:+.4f}"


Column = tuple[str, str, Callable[[Any], str]]
_LEFT = ("Namespace", "Date", "Judged vs")

# (header, DayRow attribute, formatter). The run's table leaves out what is constant by
# construction (reward avg 0.5, min 0, max 1, no negatives); `varro report` shows it all.
RUN_COLUMNS: tuple[Column, ...] = (
    ("Date", "date", str),
    ("Headlines", "headlines", _count),
    ("Roll-outs", "rollouts", _count),
    ("Structure (avg)", "avg_structure_score", _fraction),
    ("Judged vs", "outcome_date", str),
    ("Judge raw", "judge_raw", _fraction),
    ("Fallback", "fallback_share", _fraction),
    ("Steps", "train_steps", _count),
    ("KL π_old", "kl_old", _small),
    ("Clip frac", "clip_frac", _fraction),
    ("Improvement", "improvement", _signed),
    ("Win vs base", "win_vs_base", _fraction),
)
ALL_COLUMNS: tuple[Column, ...] = (
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
    ("Judge raw", "judge_raw", _fraction),
    ("Fallback", "fallback_share", _fraction),
    ("Retries", "retries", _count),
    ("Position bias", "position_bias", _fraction),
    ("Agreement", "agreement", _fraction),
    ("Steps", "train_steps", _count),
    ("Reward unscaled", "reward_unscaled", _fraction),
    ("KL π_old", "kl_old", _small),
    ("KL ref", "kl_ref", _small),
    ("Clip low", "clip_low", _fraction),
    ("Clip high", "clip_high", _fraction),
    ("Improvement", "improvement", _signed),
    ("Win vs base", "win_vs_base", _fraction),
    ("Win low", "win_vs_base_low", _fraction),
    ("Win high", "win_vs_base_high", _fraction),
    ("Win vs parent", "win_vs_parent", _fraction),
)
