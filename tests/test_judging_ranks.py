"""Strict ranks and rewards: the original contract, and no reward outside [0, 1] for any pick list."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from varro.judging.ranks import clean_picks, rewards_from_ranks, strict_ranks


def test_complete_picks_rank_in_pick_order():
    assert strict_ranks([3, 0, 7, 1, 6, 2, 5, 4], 8) == [2, 4, 6, 1, 8, 7, 5, 3]


def test_seven_rounds_leave_the_last_one_the_last_rank():
    ranks = strict_ranks([3, 0, 7, 1, 6, 2, 5], 8)
    assert ranks[4] == 8 and sorted(ranks) == list(range(1, 9))


def test_duplicates_out_of_range_and_overflow_are_ignored():
    assert clean_picks([2, 2, -1, 9, 8, 0, 2, 1, 3, 4, 5, 6, 7, 7, 0], 8) == [2, 0, 1, 3, 4, 5, 6, 7]
    assert strict_ranks([2, 2, -1, 9, 8, 0, 2, 1, 3, 4, 5, 6, 7, 7, 0], 8) == [2, 3, 1, 4, 5, 6, 7, 8]


def test_two_or_more_unpicked_are_padded_with_rank_g_minus_1():
    ranks = strict_ranks([5, 2, 5, 42], 8)
    assert ranks == [7, 7, 2, 7, 7, 1, 7, 7]
    rewards = rewards_from_ranks(ranks, 8)
    assert rewards[5] == 1.0 and rewards[2] == pytest.approx(6 / 7)
    assert all(r == pytest.approx(1 / 7) for i, r in enumerate(rewards) if i not in (2, 5))


def test_no_picks_at_all_is_a_tie_at_the_pad():
    assert strict_ranks([], 8) == [7] * 8
    assert rewards_from_ranks([7] * 8, 8) == pytest.approx([1 / 7] * 8)


def test_rewards_for_a_full_group_of_eight():
    assert rewards_from_ranks(list(range(1, 9)), 8) == pytest.approx([1 - k / 7 for k in range(8)])
    assert sum(rewards_from_ranks(list(range(1, 9)), 8)) / 8 == pytest.approx(0.5)


def test_small_and_odd_groups():
    assert strict_ranks([], 1) == [1] and rewards_from_ranks([1], 1) == [0.5]
    assert strict_ranks([1], 2) == [2, 1] and rewards_from_ranks([2, 1], 2) == [0.0, 1.0]
    assert strict_ranks([0, 2], 5) == [1, 4, 2, 4, 4]
    assert rewards_from_ranks([1, 4, 2, 4, 4], 5) == [1.0, 0.25, 0.75, 0.25, 0.25]


def test_bad_ranks_are_refused():
    with pytest.raises(ValueError, match="outside"):
        rewards_from_ranks([0, 1], 2)
    with pytest.raises(ValueError, match="ranks for a group"):
        rewards_from_ranks([1, 2, 3], 2)
    with pytest.raises(ValueError, match="at least 1"):
        strict_ranks([0], 0)


@settings(max_examples=400, deadline=None)
@given(
    group_size=st.integers(min_value=1, max_value=12),
    picks=st.lists(st.integers(min_value=-20, max_value=40), max_size=40),
)
def test_any_pick_list_gives_rewards_in_unit_interval(group_size, picks):
    ranks = strict_ranks(picks, group_size)
    assert len(ranks) == group_size
    assert all(1 <= r <= group_size for r in ranks)
    kept = clean_picks(picks, group_size)
    assert [ranks[i] for i in kept] == list(range(1, len(kept) + 1))
    unpicked = group_size - len(kept)
    if unpicked <= 1:
        assert sorted(ranks) == list(range(1, group_size + 1))
    rewards = rewards_from_ranks(ranks, group_size)
    assert all(0.0 <= r <= 1.0 for r in rewards)
    assert sum(r < 0 for r in rewards) == 0
