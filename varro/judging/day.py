"""A whole day's ranking: every group through the selection, then the day's numbers.

A day can be ranked in parts (`rank_part`, one per shard) and concluded once
(`conclude_day`): the agreement sample is a function of the day's groups alone
(which headlines have two roll-outs or more), so each part knows which of its
groups to re-judge without waiting for the others, and the conclusion needs
no judge at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from events.schema import RankedGroup, RankStats
from varro.judging.base import Judge
from varro.judging.selection import GroupToRank, rank_groups
from varro.judging.stats import agreement, day_stats, sample_ids


@dataclass(frozen=True)
class DayRanking:
    groups: list[RankedGroup]
    stats: RankStats


@dataclass(frozen=True)
class PartRanking:
    """Groups ranked, and groups of the agreement sample re-judged in reversed shown order."""

    groups: list[RankedGroup]
    rejudged: list[RankedGroup]


def agreement_groups_of(groups: Sequence[GroupToRank], k: int, seed: int) -> list[GroupToRank]:
    """The day's agreement sample, in the day's group order: up to `k` groups that get a judge."""
    sample = set(sample_ids([g.headline_id for g in groups if len(g.texts) >= 2], k, seed))
    return [g for g in groups if g.headline_id in sample]


def rank_part(
    to_rank: Sequence[GroupToRank],
    to_rejudge: Sequence[GroupToRank],
    outcomes: Sequence[str],
    judge: Judge,
    fallback: Judge | None,
    *,
    seed: int,
) -> PartRanking:
    """Rank `to_rank`, then re-judge `to_rejudge` (members of the agreement sample) in reversed order."""
    ranked = rank_groups(to_rank, outcomes, judge, fallback, seed=seed)
    again = rank_groups(to_rejudge, outcomes, judge, fallback, seed=seed, reverse=True) if to_rejudge else []
    return PartRanking(ranked, again)


def conclude_day(ranked: list[RankedGroup], rejudged: Sequence[RankedGroup], judge_name: str) -> DayRanking:
    """The day's numbers from all its ranked groups and the re-judged sample, both in the day's order."""
    rho, counted = agreement(ranked, rejudged) if rejudged else (None, 0)
    return DayRanking(ranked, day_stats(ranked, judge_name, agreement_rho=rho, agreement_groups=counted))


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
    sample = agreement_groups_of(groups, agreement_groups, seed)
    part = rank_part(groups, sample, outcomes, judge, fallback, seed=seed)
    return conclude_day(part.groups, part.rejudged, judge.name)
