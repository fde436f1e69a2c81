"""Rank: day `date`'s roll-outs judged against what happened -> `Ranked`.

Inputs come only from the log: the latest `RolloutsGenerated(date)` (roll-out
texts are in the event), the headlines it was generated from (their own texts
are removed from the outcomes) and the latest `HeadlinesFetched` of the
outcome date (D+1 unless given). A missing outcome day is refused, never
fetched. The event id hashes the roll-outs event, the outcomes event, the judge
config, the judge model where it is the policy's base, and the seed, so a
re-run on the same inputs returns the recorded event without judging.
"""

from __future__ import annotations

from events.errors import PermanentError
from events.ids import validate_date
from events.schema import HeadlinesFetched, Ranked, RolloutsGenerated
from events.store import Appended
from jobs.context import JobContext, derive_seed, identify
from jobs.daily import run_seed
from jobs.judges import configured_judges, judge_model_ref
from varro.judging import GroupToRank, rank_day
from varro.judging.outcomes import OutcomesMissing, outcome_date_for, outcome_headlines, require_outcomes


class RankInputError(PermanentError, RuntimeError):
    """Day `date` has nothing recorded to rank yet, or its record is inconsistent."""


def rank_job(
    ctx: JobContext,
    date: str,
    *,
    outcome_date: str | None = None,
    seed: int | None = None,
    force: bool = False,
) -> Appended:
    """Rank day `date` once; returns the store's `Appended` (existing or new)."""
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
    if identity.recorded is not None:
        return identity.recorded
    event_id = identity.event_id

    predicted_from = ctx.store.get_of(HeadlinesFetched, generated.headlines_event_id)
    if predicted_from is None:
        raise RankInputError(
            f"RolloutsGenerated({date}) names headlines {generated.headlines_event_id}, which are not recorded"
        )
    outcomes = require_outcomes(
        outcome_headlines(outcomes_event.headlines, predicted_from.headlines), outcome_date, date
    )
    groups = _groups(generated, predicted_from, date)
    primary, fallback = configured_judges(ctx, judge_model)
    day = rank_day(
        groups, [h.text for h in outcomes], primary, fallback, seed=seed, agreement_groups=cfg.judge.agreement_sample
    )

    event = Ranked(
        event_id=event_id,
        ns=ctx.ns,
        date=date,
        correlation_id=ctx.correlation_id or generated.correlation_id,
        causation_id=generated.event_id,
        outcome_date=outcome_date,
        rollouts_event_id=generated.event_id,
        outcomes_event_id=outcomes_event.event_id,
        judge=primary.name,
        judge_config_hash=cfg.section_hash("judge"),
        seed=seed,
        groups=day.groups,
        stats=day.stats,
        forced=force,
    )
    appended = ctx.store.append(event)
    ctx.log.info(
        "rank.done",
        event_id=event_id,
        outcome_date=outcome_date,
        judge=primary.name,
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
