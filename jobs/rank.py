"""Rank: day `date`'s roll-outs judged against what happened -> `Ranked`.

Inputs come only from the log: the latest `RolloutsGenerated(date)` (roll-out
texts are in the event), the headlines it was generated from (their own texts
are removed from the outcomes) and the latest `HeadlinesFetched` of the
outcome date (D+1 unless given). A missing outcome day is refused, never
fetched. The event id hashes the roll-outs event, the outcomes event, the judge
config, the judge model where it is the policy's base, and the seed, so a
re-run on the same inputs returns the recorded event without judging.

Ranking can be split by headline over several workers: `rank_shard` judges
its share of the day's groups (varro.judging.shards decides which, so that
every group is judged exactly as in one job) into a partial artifact, and
`merge_rank_shards` assembles the one event the unsharded job would have
written: same id, same bytes. How many shards ran is not an input.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.errors import PermanentError
from events.ids import validate_date
from events.schema import ArtifactRef, HeadlinesFetched, Ranked, RankedGroup, RolloutsGenerated
from events.store import Appended
from jobs.context import JobContext, derive_seed, identify
from jobs.daily import run_seed
from jobs.judges import configured_judges, judge_model_ref
from varro.judging import GroupToRank, rank_day
from varro.judging import shards as sharding
from varro.judging.day import DayRanking, agreement_groups_of, conclude_day, rank_part
from varro.judging.outcomes import OutcomesMissing, outcome_date_for, outcome_headlines, require_outcomes

SHARD_KIND = "ranked-shard"


class RankInputError(PermanentError, RuntimeError):
    """Day `date` has nothing recorded to rank yet, or its record is inconsistent."""


@dataclass(frozen=True)
class RankPlan:
    """What decides a day's ranking, resolved once: the inputs and the event id they make."""

    date: str
    outcome_date: str
    generated: RolloutsGenerated
    outcomes_event: HeadlinesFetched
    seed: int
    judge_model: str | None
    event_id: str
    recorded: Appended | None  # the event these inputs already recorded, if any
    forced: bool


def plan_rank(
    ctx: JobContext, date: str, *, outcome_date: str | None = None, seed: int | None = None, force: bool = False
) -> RankPlan:
    validate_date(date)
    cfg = ctx.cfg
    outcome_date = outcome_date_for(date, outcome_date)
    generated = ctx.store.latest_of(RolloutsGenerated, date)
    if generated is None:
        raise RankInputError(f"no RolloutsGenerated event for {date} in namespace {ctx.ns}: generate the day first")
    outcomes_event = ctx.store.latest_of(HeadlinesFetched, outcome_date)
    if outcomes_event is None:
        raise OutcomesMissing(outcome_date, date, ctx.ns)
    seed = derive_seed(run_seed(ctx, date), "rank") if seed is None else seed

    judge_model = judge_model_ref(ctx)
    inputs = [generated.event_id, outcomes_event.event_id, cfg.section_hash("judge"), f"seed:{seed}"]
    if judge_model is not None:
        inputs.append(f"judge-model:{judge_model}")
    identity = identify(ctx, "Ranked", date, inputs, force=force)
    return RankPlan(
        date=date,
        outcome_date=outcome_date,
        generated=generated,
        outcomes_event=outcomes_event,
        seed=seed,
        judge_model=judge_model,
        event_id=identity.event_id,
        recorded=identity.recorded,
        forced=force,
    )


def rank_job(
    ctx: JobContext,
    date: str,
    *,
    outcome_date: str | None = None,
    seed: int | None = None,
    force: bool = False,
) -> Appended:
    """Rank day `date` once; returns the store's `Appended` (existing or new)."""
    plan = plan_rank(ctx, date, outcome_date=outcome_date, seed=seed, force=force)
    if plan.recorded is not None:
        return plan.recorded
    groups, outcomes = _day_inputs(ctx, plan)
    primary, fallback = configured_judges(ctx, plan.judge_model)
    day = rank_day(groups, outcomes, primary, fallback, seed=plan.seed, agreement_groups=ctx.cfg.judge.agreement_sample)
    return _record(ctx, plan, primary.name, day)


def rank_shard(
    ctx: JobContext,
    date: str,
    shard: int,
    shards: int,
    *,
    outcome_date: str | None = None,
    seed: int | None = None,
    force: bool = False,
) -> ArtifactRef | None:
    """Shard `shard` of `shards` of day `date`'s ranking, as a partial artifact.

    None when the day's `Ranked` for these inputs is already recorded: a shard
    delivered again after the merge judges nothing.
    """
    if shards < 1 or not 0 <= shard < shards:
        raise RankInputError(f"shard {shard} of {shards}: need 0 <= shard < shards")
    plan = plan_rank(ctx, date, outcome_date=outcome_date, seed=seed, force=force)
    if plan.recorded is not None:
        return None
    groups, outcomes = _day_inputs(ctx, plan)
    rows = sharding.batch_rows(ctx.cfg.judge)
    sample = agreement_groups_of(groups, ctx.cfg.judge.agreement_sample, plan.seed)
    mine = sharding.shard_of(groups, shard, shards, rows)
    mine_again = sharding.shard_of(sample, shard, shards, rows)
    primary, fallback = configured_judges(ctx, plan.judge_model)
    part = rank_part(mine, mine_again, outcomes, primary, fallback, seed=plan.seed)
    ctx.log.info("rank.shard", shard=shard, shards=shards, groups=len(mine), rejudged=len(mine_again))
    ranked = sharding.RankedPart(
        ranked_event_id=plan.event_id,
        shard=shard,
        shards=shards,
        judge=primary.name,
        groups=part.groups,
        rejudged=part.rejudged,
    )
    return ctx.artifacts.put(sharding.encode(ranked), kind=SHARD_KIND)


def merge_rank_shards(
    ctx: JobContext,
    date: str,
    shard_refs: list[ArtifactRef],
    *,
    outcome_date: str | None = None,
    seed: int | None = None,
    force: bool = False,
) -> Appended:
    """The one `Ranked` the unsharded job would record, from the shards' artifacts (no judging)."""
    plan = plan_rank(ctx, date, outcome_date=outcome_date, seed=seed, force=force)
    if plan.recorded is not None:
        return plan.recorded
    groups, _ = _day_inputs(ctx, plan)
    parts = [sharding.decode(ctx.artifacts.get(ref)) for ref in shard_refs]
    if any(part.ranked_event_id != plan.event_id for part in parts):
        raise RankInputError(f"a ranking shard for {date} was judged from other inputs than the day's")
    judges = {part.judge for part in parts}
    if len(judges) != 1:
        raise RankInputError(f"ranking shards for {date} name {len(judges)} primary judges: {sorted(judges)}")
    ranked = _in_day_order(groups, [g for part in parts for g in part.groups], date, "groups")
    sample = agreement_groups_of(groups, ctx.cfg.judge.agreement_sample, plan.seed)
    rejudged = _in_day_order(sample, [g for part in parts for g in part.rejudged], date, "agreement sample")
    judge = judges.pop()
    return _record(ctx, plan, judge, conclude_day(ranked, rejudged, judge))


def _in_day_order(wanted: list[GroupToRank], got: list[RankedGroup], date: str, what: str) -> list[RankedGroup]:
    """`got` in the order of `wanted`, refusing anything but exactly one ranking per wanted group."""
    by_id: dict[str, RankedGroup] = {}
    for group in got:
        if group.headline_id in by_id:
            raise RankInputError(f"ranking shards for {date} hold headline {group.headline_id} twice ({what})")
        by_id[group.headline_id] = group
    ids = [g.headline_id for g in wanted]
    missing, extra = [i for i in ids if i not in by_id], sorted(set(by_id) - set(ids))
    if missing or extra:
        raise RankInputError(
            f"ranking shards for {date} do not cover the day's {what} exactly: missing {missing}, extra {extra}"
        )
    return [by_id[i] for i in ids]


def _day_inputs(ctx: JobContext, plan: RankPlan) -> tuple[list[GroupToRank], list[str]]:
    """The day's groups to rank and the outcome texts they are judged against."""
    generated, date = plan.generated, plan.date
    predicted_from = ctx.store.get_of(HeadlinesFetched, generated.headlines_event_id)
    if predicted_from is None:
        raise RankInputError(
            f"RolloutsGenerated({date}) names headlines {generated.headlines_event_id}, which are not recorded"
        )
    outcomes = require_outcomes(
        outcome_headlines(plan.outcomes_event.headlines, predicted_from.headlines), plan.outcome_date, date
    )
    return _groups(generated, predicted_from, date), [h.text for h in outcomes]


def _record(ctx: JobContext, plan: RankPlan, judge: str, day: DayRanking) -> Appended:
    generated = plan.generated
    event = Ranked(
        event_id=plan.event_id,
        ns=ctx.ns,
        date=plan.date,
        correlation_id=ctx.correlation_id or generated.correlation_id,
        causation_id=generated.event_id,
        outcome_date=plan.outcome_date,
        rollouts_event_id=generated.event_id,
        outcomes_event_id=plan.outcomes_event.event_id,
        judge=judge,
        judge_config_hash=ctx.cfg.section_hash("judge"),
        seed=plan.seed,
        groups=day.groups,
        stats=day.stats,
        forced=plan.forced,
    )
    appended = ctx.store.append(event)
    ctx.log.info(
        "rank.done",
        event_id=plan.event_id,
        outcome_date=plan.outcome_date,
        judge=judge,
        groups=day.stats.groups,
        avg=day.stats.avg,
        primary_share=day.stats.primary_share,
        agreement=day.stats.agreement,
    )
    return appended


def _groups(generated: RolloutsGenerated, predicted_from: HeadlinesFetched, date: str) -> list[GroupToRank]:
    """One group per headline id, with every roll-out the generation recorded (any group size)."""
    texts = {h.id: h.text for h in predicted_from.headlines}
    groups, seen = [], set()
    for group in generated.groups:
        if group.headline_id in seen:
            raise RankInputError(f"RolloutsGenerated({date}) has two groups for headline {group.headline_id}")
        if group.headline_id not in texts:
            raise RankInputError(f"RolloutsGenerated({date}) has roll-outs for unknown headline {group.headline_id}")
        seen.add(group.headline_id)
        groups.append(
            GroupToRank(
                headline_id=group.headline_id,
                headline=texts[group.headline_id],
                texts=tuple(r.text for r in group.rollouts),
            )
        )
    return groups
