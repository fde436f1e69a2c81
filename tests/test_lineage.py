"""Lineage walks and the days x stages grid over a hand-built three-day log."""

from __future__ import annotations

import msgspec
import pytest
from projection_log import BASE, C1, C2, C2B, D1, D2, D3, build_log, metrics, trained

from varro.lineage import DONE, MISSING, LineageError, day_grid, lineage


@pytest.fixture(scope="module")
def log():
    return build_log()


def test_walk_goes_from_checkpoint_back_to_base_newest_first(log):
    steps = lineage(log["events"], C2B.sha256)
    assert [(s.date, s.checkpoint_sha256, s.parent_sha256) for s in steps] == [
        (D2, C2B.sha256, C1.sha256),
        (D1, C1.sha256, BASE.sha256),
    ]
    newest = steps[0]
    assert newest.epoch_event_id == log["e2b"].event_id
    assert newest.ranked_event_id == log["k2b"].event_id
    assert newest.rollouts_event_id == log["g2"].event_id
    assert newest.data_hashes == tuple(log["e2b"].data_hashes)
    assert (newest.variant, newest.pi_old, newest.forced) == ("gspo", "recomputed", True)
    assert newest.metrics.steps == 5
    assert steps[1].ranked_event_id == log["k1"].event_id


def test_superseded_checkpoint_keeps_its_own_history(log):
    steps = lineage(log["events"], C2.sha256)
    assert [s.epoch_event_id for s in steps] == [log["e2"].event_id, log["e1"].event_id]
    assert steps[0].ranked_event_id == log["k2"].event_id


def test_unique_prefix_any_case_resolves(log):
    assert [s.date for s in lineage(log["events"], C1.sha256[:8].upper())] == [D1]


def test_base_model_has_no_epochs(log):
    assert lineage(log["events"], BASE.sha256) == []


def test_ambiguous_prefix_is_a_clear_error(log):
    with pytest.raises(LineageError, match=r"ambiguous checkpoint prefix 'ab12'.*2 checkpoints") as info:
        lineage(log["events"], "ab12")
    assert C2.sha256[:16] in str(info.value) and C2B.sha256[:16] in str(info.value)


@pytest.mark.parametrize("ref", ["f" * 64, "0123456789"])
def test_unknown_checkpoint_is_a_clear_error(log, ref):
    with pytest.raises(LineageError, match="unknown checkpoint"):
        lineage(log["events"], ref)


@pytest.mark.parametrize("ref", ["", "  ", "final_model", "../x"])
def test_non_hex_reference_is_a_clear_error(log, ref):
    with pytest.raises(LineageError, match="not a checkpoint sha256"):
        lineage(log["events"], ref)


def test_epoch_that_left_weights_unchanged_still_ends_at_base(log):
    """A zero-gradient epoch makes a checkpoint its own parent; the walk must not loop."""
    k3 = msgspec.structs.replace(log["k2b"], event_id="k3", date=D3, outcome_date="2025-03-06")
    same = trained(k3, C2B, C2B, metrics(2, kl=0.0, clip_low=0.0, clip_high=0.0, improvement=0.0))
    steps = lineage([*log["events"], k3, same], C2B.sha256)
    assert [s.date for s in steps] == [D3, D2, D1]


def test_day_grid_marks_done_and_missing(log):
    grid = day_grid(log["events"])
    assert list(grid) == [D1, D2, D3]
    assert grid[D1] == {"fetch": DONE, "generate": DONE, "rank": DONE, "train": DONE}
    assert grid[D2] == {"fetch": DONE, "generate": DONE, "rank": DONE, "train": DONE}
    assert grid[D3] == {"fetch": DONE, "generate": DONE, "rank": MISSING, "train": MISSING}


def test_day_grid_over_a_given_range_includes_days_without_events(log):
    grid = day_grid(log["events"], dates=[D3, "2025-03-06", D2])
    assert list(grid) == [D2, D3, "2025-03-06"]
    assert set(grid["2025-03-06"].values()) == {MISSING}


def test_day_grid_lists_requested_days_with_nothing_done_yet(log):
    requested_only = [ev for ev in log["events"] if type(ev).__name__ == "DailyRunRequested"]
    nothing = dict.fromkeys(("fetch", "generate", "rank", "train"), MISSING)
    assert day_grid(requested_only) == {d: nothing for d in (D1, D2, D3)}


def test_day_grid_refuses_mixed_namespaces_and_bad_dates(log):
    with pytest.raises(LineageError, match="several namespaces"):
        day_grid([*log["events"], msgspec.structs.replace(log["h1"], ns="other")])
    with pytest.raises(ValueError, match="invalid date"):
        day_grid(log["events"], dates=["2025/03/03"])
