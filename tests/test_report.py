"""The per-day summary: per-day values, never cumulative, rendered as a table and Markdown."""

from __future__ import annotations

import pytest
from projection_log import D1, D2, D3, build_log, request
from rich.console import Console

from varro.report import ALL_COLUMNS, NOT_YET, DayRow, day_rows, render_table, summary_markdown


@pytest.fixture(scope="module")
def log():
    return build_log()


@pytest.fixture(scope="module")
def rows(log):
    return day_rows(log["events"])


def test_one_row_per_date(rows):
    assert [row.date for row in rows] == [D1, D2, D3]


def test_values_are_per_day_not_cumulative(log, rows):
    one, two, three = rows
    assert (one.headlines, two.headlines, three.headlines) == (3, 4, 3)
    assert (one.rollouts, two.rollouts, three.rollouts) == (24, 32, 24)
    assert (one.reward_n, two.reward_n) == (24, 32)  # a cumulative count would give 56 on day 2
    assert (one.train_steps, two.train_steps) == (3, 5)  # the forced epoch's own 5 steps, not 3 + 4 + 5
    assert two.avg_structure_score == log["g2"].stats.avg_structure_score


def test_rewards_come_from_the_ranking_of_that_dates_rollouts(log, rows):
    two = rows[1]
    stats = log["k2b"].stats
    assert two.outcome_date == D3
    assert (two.reward_avg, two.reward_min, two.reward_max, two.reward_negatives) == (
        stats.avg,
        stats.min,
        stats.max,
        stats.negatives,
    )


def test_training_columns_use_the_latest_epoch(log, rows):
    metrics = log["e2b"].metrics
    two = rows[1]
    assert two.kl_old == metrics.kl_old_k3
    assert two.clip_frac == pytest.approx(metrics.clip_frac_low + metrics.clip_frac_high)
    assert two.improvement == metrics.improvement


def test_stages_not_run_are_none(rows):
    three = rows[2]
    assert three.headlines == 3 and three.rollouts == 24
    not_yet = (
        "outcome_date",
        "reward_n",
        "reward_avg",
        "reward_min",
        "reward_max",
        "reward_negatives",
        "train_steps",
        "kl_old",
        "clip_frac",
        "improvement",
    )
    assert all(getattr(three, name) is None for name in not_yet)


def test_a_day_only_requested_has_an_empty_row(log):
    rows = day_rows([*log["events"], request("2025-03-06")])
    assert rows[-1] == DayRow(ns=rows[0].ns, date="2025-03-06")


def test_render_table_shows_every_day_and_the_legend(rows):
    table = render_table(rows, columns=ALL_COLUMNS)
    assert table.row_count == 3
    console = Console(record=True, width=400, color_system=None)  # as `varro report` off a terminal
    console.print(table)
    text = console.export_text()
    for date in (D1, D2, D3):
        assert date in text
    assert NOT_YET in text
    assert "never cumulative" in text
    assert "0.500" in text and "1.70e-04" in text and "+0.0340" in text


def test_summary_markdown_is_a_table_with_one_line_per_day(rows):
    md = summary_markdown(rows, columns=ALL_COLUMNS)
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3
    assert table[0].startswith("| Date | Headlines | Roll-outs")
    day3 = next(line for line in table if line.startswith(f"| {D3}"))
    assert day3.count(NOT_YET) == len(ALL_COLUMNS) - 4  # everything after the day's own generation
    day2 = next(line for line in table if line.startswith(f"| {D2}"))
    assert "| 32 |" in day2 and "| 5 |" in day2
    assert "never cumulative" in md


def test_the_run_table_drops_constant_columns_and_keeps_every_header_whole_in_a_pipe(rows):
    from varro.report import RUN_COLUMNS

    headers = [h for h, _, _ in RUN_COLUMNS]
    assert "Reward avg" not in headers and "Negatives" not in headers  # 0.5 and 0 by construction
    console = Console(record=True, width=160, color_system=None)  # what `varro run` uses off a terminal
    console.print(render_table(rows))
    text = console.export_text()
    assert "…" not in text
    for header in headers:
        assert header in text


def test_summary_markdown_of_nothing_says_so():
    assert "No days recorded yet" in summary_markdown([])
