"""Strict ranks from a judge's picks, and rewards from ranks.

The original system specified: deduplicate the picks, stop at G, clamp to
[1, G], give every unpicked roll-out rank G-1 ("pad unpicked = 7" for G = 8),
and map rank to reward with ``1 - (rank-1)/(G-1)``. Varro keeps that contract
and states the corner cases it left open, so no pick list, however broken, can
produce a reward outside [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence


def clean_picks(picks: Sequence[int], group_size: int) -> list[int]:
    """The usable picks: in range, first occurrence of each, at most `group_size`."""
    seen: list[int] = []
    for pick in picks:
        if 0 <= pick < group_size and pick not in seen:
            seen.append(pick)
            if len(seen) == group_size:
                break
    return seen


def strict_ranks(picks: Sequence[int], group_size: int) -> list[int]:
    """Rank of each roll-out (1 = best) from the roll-out indices the judge picked, in pick order.

    * Picks are cleaned first (`clean_picks`): duplicates keep their first
      occurrence, out-of-range indices are dropped, nothing past `group_size`
      counts. The k-th surviving pick gets rank k.
    * Exactly one roll-out left unpicked takes the last rank G: that is the
      selection rule ("the last one left takes the last rank"), so G-1 rounds
      of picks are a complete, strict ranking.
    * Two or more unpicked roll-outs each get rank G-1 (the original "pad
      unpicked = 7"). Those ranks tie, so the ranking is no longer strict; the
      picked ranks 1..k stay strict and k <= G-2 keeps them below the pad.
      The result lists ranks by roll-out index, so padding has no order to vary.
    * G = 1: the single roll-out has rank 1.

    Every rank lies in [1, G] by construction, which is the original's clamp.
    """
    if group_size < 1:
        raise ValueError(f"group size must be at least 1, got {group_size}")
    kept = clean_picks(picks, group_size)
    unpicked = [i for i in range(group_size) if i not in kept]
    pad = group_size if len(unpicked) == 1 else max(group_size - 1, 1)
    ranks = [pad] * group_size
    for position, index in enumerate(kept):
        ranks[index] = position + 1
    return ranks


def rewards_from_ranks(ranks: Sequence[int], group_size: int) -> list[float]:
    """Scaled rewards ``1 - (rank-1)/(G-1)`` in [0, 1]: G = 8 gives 1, .857, ..., 0.

    G = 1 has no sibling to be compared with, so its one roll-out gets 0.5,
    the mean reward of every complete ranking; with no group to normalise
    against it carries no advantage in GSPO either way.
    """
    if len(ranks) != group_size:
        raise ValueError(f"{len(ranks)} ranks for a group of {group_size}")
    bad = [r for r in ranks if not 1 <= r <= group_size]
    if bad:
        raise ValueError(f"ranks {bad} outside [1, {group_size}]")
    if group_size == 1:
        return [0.5]
    return [1.0 - (rank - 1) / (group_size - 1) for rank in ranks]
