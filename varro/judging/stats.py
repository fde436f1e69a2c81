"""Per-day numbers about a ranking: reward spread, fallback share, position bias
and agreement with a re-judge in reversed order. Every number is for this day
alone; rewards are the scaled ones in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from events.ids import sha256_hex
from events.schema import RankedGroup, RankStats
from varro.judging.selection import NO_JUDGE


def position_pick_rates(groups: Sequence[RankedGroup], judge: str) -> tuple[list[float], list[float]]:
    """Per shown position: how often the judge picked it, and how often chance would.

    Counted over the rounds of groups that `judge` ranked. The chance rate of a
    position is the mean of 1/m over the rounds that showed it (m candidates),
    so a judge without position bias has rate ≈ chance at every position.
    """
    shown = np.zeros(0)
    picked = np.zeros(0)
    chance = np.zeros(0)
    for group in groups:
        if group.judge != judge:
            continue
        for rnd in group.rounds:
            if rnd.pick is None:
                continue
            m = len(rnd.shown)
            if m > len(shown):
                grow = m - len(shown)
                shown, picked, chance = (np.pad(a, (0, grow)) for a in (shown, picked, chance))
            shown[:m] += 1
            chance[:m] += 1.0 / m
            picked[rnd.shown.index(rnd.pick)] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return (picked / shown).tolist(), (chance / shown).tolist()


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n with ties sharing their mean rank (as Spearman's rho needs)."""
    data = np.asarray(values, dtype=float)
    order = np.argsort(data, kind="stable")
    ranks = np.empty(len(data))
    i = 0
    while i < len(data):
        j = i
        while j + 1 < len(data) and data[order[j + 1]] == data[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None when either side is constant (undefined)."""
    if len(a) != len(b):
        raise ValueError(f"rank lists differ in length: {len(a)} vs {len(b)}")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(np.sqrt((ra @ ra) * (rb @ rb)))
    return None if denominator == 0 else float(ra @ rb) / denominator


def sample_ids(judged: Sequence[str], k: int, seed: int) -> list[str]:
    """Up to `k` of the headline ids `judged`, by a seeded hash of each id (not of where it sits)."""
    return sorted(judged, key=lambda hid: sha256_hex(f"{seed}\x1fagreement\x1f{hid}".encode()))[: max(k, 0)]


def agreement(original: Sequence[RankedGroup], rejudged: Sequence[RankedGroup]) -> tuple[float | None, int]:
    """Mean Spearman rho between each group's ranking and its reversed-order re-judge.

    Only pairs ranked by the same judge both times count (a fallback in one of
    the two runs compares two different judges), and only where rho is defined.
    """
    by_id = {g.headline_id: g for g in original}
    rhos = []
    for again in rejudged:
        first = by_id.get(again.headline_id)
        if first is None or first.judge != again.judge:
            continue
        rho = spearman(first.ranks, again.ranks)
        if rho is not None:
            rhos.append(rho)
    return (float(np.mean(rhos)) if rhos else None), len(rhos)


def day_stats(
    groups: Sequence[RankedGroup], primary: str, *, agreement_rho: float | None = None, agreement_groups: int = 0
) -> RankStats:
    """The day's `RankStats`; `primary_share` is 1.0 when no group needed a judge at all."""
    rewards = np.array([r for g in groups for r in g.rewards], dtype=float)
    judged = [g for g in groups if g.judge != NO_JUDGE]
    rates, chance = position_pick_rates(groups, primary)
    return RankStats(
        groups=len(groups),
        n=int(rewards.size),
        avg=float(rewards.mean()) if rewards.size else 0.0,
        min=float(rewards.min()) if rewards.size else 0.0,
        max=float(rewards.max()) if rewards.size else 0.0,
        negatives=int((rewards < 0).sum()),
        primary_share=sum(g.judge == primary for g in judged) / len(judged) if judged else 1.0,
        position_pick_rate=rates,
        position_chance=chance,
        agreement=agreement_rho,
        agreement_groups=agreement_groups,
    )
