"""The iterative selection: round after round, the judge picks the best of the
remaining roll-outs; the pick gets the next rank and the last one left the last.

Every group of the day advances one round at a time, so a judge answers round
r of all groups in one call. The order in which candidates are shown is a
deterministic shuffle of (seed, headline id, round), recorded with the pick, so
that position bias averages out and any ranking can be re-derived.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from events.ids import sha256_hex
from events.schema import JudgeRound, RankedGroup
from varro.judging.base import Judge, JudgeFailed, RoundRequest
from varro.judging.ranks import rewards_from_ranks, strict_ranks

NO_JUDGE = "none"  # recorded for groups of fewer than two roll-outs: nothing to compare


@dataclass(frozen=True)
class GroupToRank:
    """The roll-outs of one headline; a roll-out's index is its position in `texts`."""

    headline_id: str
    headline: str
    texts: tuple[str, ...]


@dataclass
class Selection:
    """One judge's pass over one group; `failure` is set when the judge gave up."""

    picks: list[int] = field(default_factory=list)
    rounds: list[JudgeRound] = field(default_factory=list)
    raw_scores: list[float | None] = field(default_factory=list)
    retries: int = 0
    failure: str | None = None


def shown_order(
    remaining: Sequence[int], seed: int, headline_id: str, round_index: int, *, reverse: bool = False
) -> list[int]:
    """The order round `round_index` shows the remaining roll-outs in.

    A sort by a hash of (seed, headline id, round, roll-out index) rather than a
    PRNG shuffle, so the order is the same on every Python and NumPy version.
    `reverse` shows exactly the reverse order (the agreement check).
    """
    order = sorted(
        remaining,
        key=lambda index: sha256_hex(f"{seed}\x1f{headline_id}\x1f{round_index}\x1f{index}".encode()),
    )
    return order[::-1] if reverse else order


def select(
    groups: Sequence[GroupToRank], outcomes: Sequence[str], judge: Judge, *, seed: int, reverse: bool = False
) -> list[Selection]:
    """Run the rounds for all groups together; one `judge.pick` call per round."""
    states = [Selection(raw_scores=[None] * len(g.texts)) for g in groups]
    outcome_texts = tuple(outcomes)
    round_index = 0
    while True:
        active = [
            i
            for i, (g, s) in enumerate(zip(groups, states, strict=True))
            if s.failure is None and len(g.texts) - len(s.picks) >= 2
        ]
        if not active:
            return states
        shown = {}
        requests = []
        for i in active:
            group, state = groups[i], states[i]
            remaining = [j for j in range(len(group.texts)) if j not in state.picks]
            shown[i] = shown_order(remaining, seed, group.headline_id, round_index, reverse=reverse)
            requests.append(
                RoundRequest(
                    key=group.headline_id,
                    headline=group.headline,
                    outcomes=outcome_texts,
                    candidates=tuple(group.texts[j] for j in shown[i]),
                )
            )
        answers = judge.pick(requests)
        if len(answers) != len(requests):
            raise JudgeFailed(f"judge {judge.name} answered {len(answers)} of {len(requests)} rounds")
        for i, answer in zip(active, answers, strict=True):
            state, order = states[i], shown[i]
            state.retries += answer.retries
            choice = answer.choice
            pick = order[choice] if choice is not None and 0 <= choice < len(order) else None
            state.rounds.append(JudgeRound(shown=order, pick=pick, raw=answer.raw, retries=answer.retries))
            if pick is None:
                state.failure = (
                    f"{judge.name} gave no valid pick in round {round_index + 1}: "
                    f"{answer.error or f'position {answer.choice} of {len(order)}'}"
                )
                continue
            state.picks.append(pick)
            if round_index == 0 and answer.scores is not None:
                for position, score in zip(order, answer.scores, strict=True):
                    state.raw_scores[position] = float(score)
        round_index += 1


def rank_groups(
    groups: Sequence[GroupToRank],
    outcomes: Sequence[str],
    judge: Judge,
    fallback: Judge | None,
    *,
    seed: int,
    reverse: bool = False,
) -> list[RankedGroup]:
    """Rank every group with `judge`; a group it gives up on is ranked again by `fallback`.

    The fallback ranks the whole group from scratch so that one judge stands
    behind each ranking; the abandoned rounds are kept in `failed_rounds` and
    the reason in `fallback_reason`. Without a fallback a failed group is an
    error, never a silently padded ranking. Groups of one roll-out need no
    judge (rank 1, reward 0.5); groups of none are recorded empty.
    """
    rankable = [i for i, g in enumerate(groups) if len(g.texts) >= 2]
    primary = dict(
        zip(rankable, select([groups[i] for i in rankable], outcomes, judge, seed=seed, reverse=reverse), strict=True)
    )
    failed = [i for i in rankable if primary[i].failure is not None]
    second: dict[int, Selection] = {}
    fallback_name = ""
    if failed:
        if fallback is None:
            raise JudgeFailed(
                f"{len(failed)} group(s) could not be ranked and no fallback judge is configured; first: "
                f"{groups[failed[0]].headline_id}: {primary[failed[0]].failure}"
            )
        fallback_name = fallback.name
        second = dict(
            zip(
                failed, select([groups[i] for i in failed], outcomes, fallback, seed=seed, reverse=reverse), strict=True
            )
        )
    ranked = []
    for i, group in enumerate(groups):
        size = len(group.texts)
        if i not in primary:
            ranks = strict_ranks([], size) if size else []
            ranked.append(
                RankedGroup(
                    headline_id=group.headline_id,
                    ranks=ranks,
                    rewards=rewards_from_ranks(ranks, size) if size else [],
                    raw_scores=[None] * size,
                    judge=NO_JUDGE,
                )
            )
            continue
        first = primary[i]
        final, by, failed_rounds = first, judge.name, []
        if i in second:
            final, by, failed_rounds = second[i], fallback_name, first.rounds
            if final.failure is not None:
                raise JudgeFailed(f"group {group.headline_id}: {first.failure}; fallback: {final.failure}")
        ranks = strict_ranks(final.picks, size)
        ranked.append(
            RankedGroup(
                headline_id=group.headline_id,
                ranks=ranks,
                rewards=rewards_from_ranks(ranks, size),
                raw_scores=final.raw_scores,
                rounds=final.rounds,
                retries=first.retries + (final.retries if final is not first else 0),
                judge=by,
                fallback_reason=first.failure,
                failed_rounds=failed_rounds,
            )
        )
    return ranked
