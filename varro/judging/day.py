"""A whole day's ranking: every group through the selection, then the day's numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from events.schema import RankedGroup, RankStats
from varro.judging.base import Judge
from varro.judging.selection import GroupToRank, rank_groups
from varro.judging.stats import agreement, agreement_sample, day_stats


@dataclass(frozen=True)
class DayRanking:
    groups: list[RankedGroup]
    stats: RankStats


def rank_day(
    groups: Sequence[GroupToRank],
    outcomes: Sequence[str],
    judge: Judge,
    fallback: Judge | None,
    *,
    seed: int,
    agreement_groups: int,
) -> DayRanking:
    """Rank all groups, then re-judge a seeded sample in reversed shown order.

    The re-judge measures how much the ranking depends on the order the
    candidates were shown in (1.0: not at all); it is reported, never used as
    the ranking.
    """
    ranked = rank_groups(groups, outcomes, judge, fallback, seed=seed)
    sample = set(agreement_sample(ranked, agreement_groups, seed))
    rho, counted = None, 0
    if sample:
        again = rank_groups(
            [g for g in groups if g.headline_id in sample], outcomes, judge, fallback, seed=seed, reverse=True
        )
        rho, counted = agreement(ranked, again)
    return DayRanking(ranked, day_stats(ranked, judge.name, agreement_rho=rho, agreement_groups=counted))
