"""Generate a day's roll-outs and record them as one `RolloutsGenerated` event.

Inputs come only from the log and the checkpoint store: the latest
`HeadlinesFetched(date)`, a checkpoint (by default the one current before the
day was trained), the sampler profile, the prompt template and a base seed.
Their hashes make the event id, so a second run on the same inputs finds the
event and generates nothing. Token ids and behaviour log-probs go to one
content-addressed artifact; the event carries the readable part.

Generation can be split by headline over several workers: `generate_shard`
writes a partial artifact for every `shards`-th generation pass (a pass is
``batch_rows // group_size`` consecutive headlines, see
varro.generation.batch_rows and headlines_per_pass) and `merge_shards` assembles the one event
the unsharded job would have written. Shards split on pass boundaries, not on
single headlines, because a roll-out's logits depend in their last bits on
which prompts share its batch; whole passes keep the artifact bit-identical.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from events.errors import PermanentError
from events.ids import canonical_hash, sha256_hex, validate_date
from events.schema import (
    ArtifactRef,
    CheckpointRef,
    GenerationStats,
    Headline,
    HeadlinesFetched,
    RolloutGroup,
    RolloutsGenerated,
    RolloutSummary,
    SamplerSpec,
)
from events.store import Appended
from jobs.context import JobContext, derive_seed, identify, parent_checkpoint
from jobs.daily import run_seed
from varro import rollouts
from varro.evaluation.panel import training_headlines
from varro.prompts import prompt_hash, prompt_ids

if TYPE_CHECKING:
    from varro.model.cache import LoadedModel

ARTIFACT_KIND = "rollouts"
SHARD_KIND = "rollouts-shard"


class GenerateInputError(PermanentError, RuntimeError):
    """The day cannot be generated from what is recorded (names what is missing)."""


@dataclass(frozen=True)
class Plan:
    """Everything that decides a day's roll-outs, resolved once."""

    date: str
    headlines_event: HeadlinesFetched
    headlines: list[Headline]
    checkpoint: CheckpointRef
    sampler: SamplerSpec
    group_size: int
    base_seed: int
    prompt_hash: str
    event_id: str
    recorded: Appended | None  # the event these inputs already recorded, if any
    forced: bool


def plan_day(
    ctx: JobContext,
    date: str,
    *,
    checkpoint: CheckpointRef | None = None,
    base_seed: int | None = None,
    force: bool = False,
) -> Plan:
    validate_date(date)
    fetched = ctx.store.latest_of(HeadlinesFetched, date)
    if fetched is None:
        raise GenerateInputError(f"no HeadlinesFetched event for {date} in namespace {ctx.ns}: fetch the day first")
    cfg = ctx.cfg
    checkpoint = checkpoint or parent_checkpoint(ctx, date)
    base_seed = run_seed(ctx, date) if base_seed is None else base_seed
    sampler = cfg.sampler()
    share = cfg.generation.holdout_share
    headlines = choose_headlines(training_headlines(fetched.headlines, share), cfg.generation.max_headlines, date)
    p_hash = prompt_hash(cfg, ctx.models.tokenizer(checkpoint))
    inputs = [
        fetched.event_id,
        checkpoint.sha256,
        canonical_hash(sampler),
        p_hash,
        f"seed:{base_seed}",
        f"group:{cfg.generation.group_size}",
        f"cap:{cfg.generation.max_headlines}",
    ]
    if share > 0:  # absent at 0, so days recorded before the hold-out existed keep their ids
        inputs.append(f"holdout:{share!r}")
    identity = identify(ctx, "RolloutsGenerated", date, inputs, force=force)
    return Plan(
        date=date,
        headlines_event=fetched,
        headlines=headlines,
        checkpoint=checkpoint,
        sampler=sampler,
        group_size=cfg.generation.group_size,
        base_seed=base_seed,
        prompt_hash=p_hash,
        event_id=identity.event_id,
        recorded=identity.recorded,
        forced=force,
    )


def choose_headlines(headlines: list[Headline], cap: int | None, date: str) -> list[Headline]:
    """At most `cap` headlines, picked by a hash of date and id (not feed order), kept in recorded order."""
    if cap is None or len(headlines) <= cap:
        return list(headlines)
    picked = set(sorted(range(len(headlines)), key=lambda i: sha256_hex(f"{date}\x1f{headlines[i].id}".encode()))[:cap])
    return [h for i, h in enumerate(headlines) if i in picked]


def generate_rollouts_job(
    ctx: JobContext,
    date: str,
    *,
    checkpoint: CheckpointRef | None = None,
    base_seed: int | None = None,
    force: bool = False,
) -> Appended:
    plan = plan_day(ctx, date, checkpoint=checkpoint, base_seed=base_seed, force=force)
    if plan.recorded is not None:
        return plan.recorded
    started = time.perf_counter()
    artifact = _generate(ctx, plan, plan.headlines)
    return _record(ctx, plan, artifact, time.perf_counter() - started)


def generate_shard(
    ctx: JobContext,
    date: str,
    shard: int,
    shards: int,
    *,
    checkpoint: CheckpointRef | None = None,
    base_seed: int | None = None,
) -> ArtifactRef:
    """Roll-outs for the generation passes whose position % `shards` == `shard`, as a partial artifact."""
    from varro.generation import headlines_per_pass

    if shards < 1 or not 0 <= shard < shards:
        raise GenerateInputError(f"shard {shard} of {shards}: need 0 <= shard < shards")
    plan = plan_day(ctx, date, checkpoint=checkpoint, base_seed=base_seed)
    per_pass = headlines_per_pass(_batch_rows(ctx, plan, ctx.models.load(plan.checkpoint)), plan.group_size)
    mine = [h for i, h in enumerate(plan.headlines) if (i // per_pass) % shards == shard]
    return ctx.artifacts.put(rollouts.encode(_generate(ctx, plan, mine)), kind=SHARD_KIND)


def merge_shards(
    ctx: JobContext,
    date: str,
    shard_refs: list[ArtifactRef],
    *,
    checkpoint: CheckpointRef | None = None,
    base_seed: int | None = None,
    force: bool = False,
) -> Appended:
    """The one `RolloutsGenerated` the unsharded job would record, from the shards' artifacts.

    `stats.wall_s` of a merged event covers the merge only; the shards ran elsewhere.
    """
    plan = plan_day(ctx, date, checkpoint=checkpoint, base_seed=base_seed, force=force)
    if plan.recorded is not None:
        return plan.recorded
    started = time.perf_counter()
    parts = [rollouts.decode(ctx.artifacts.get(ref)) for ref in shard_refs]
    for part in parts:
        if part.checkpoint_sha256 != plan.checkpoint.sha256 or part.sampler != plan.sampler:
            raise GenerateInputError(f"a shard for {date} was generated with another checkpoint or sampler")
    prompts = {p.headline_id: p for part in parts for p in part.prompts}
    by_headline: dict[str, list[rollouts.RolloutRecord]] = {}
    for part in parts:
        for record in part.rollouts:
            by_headline.setdefault(record.headline_id, []).append(record)
    wanted = [h.id for h in plan.headlines]
    missing = [hid for hid in wanted if hid not in prompts]
    if missing or set(prompts) - set(wanted):
        raise GenerateInputError(
            f"shards for {date} do not cover the day's headlines exactly: missing {missing}, "
            f"extra {sorted(set(prompts) - set(wanted))}"
        )
    if any(len(by_headline.get(hid, [])) != plan.group_size for hid in wanted):
        raise GenerateInputError(f"shards for {date} hold a headline twice or a group that is not {plan.group_size}")
    artifact = rollouts.RolloutArtifact(
        checkpoint_sha256=plan.checkpoint.sha256,
        sampler=plan.sampler,
        prompts=[prompts[hid] for hid in wanted],
        rollouts=[r for hid in wanted for r in sorted(by_headline[hid], key=lambda r: r.index)],
    )
    return _record(ctx, plan, artifact, time.perf_counter() - started)


def _generate(ctx: JobContext, plan: Plan, headlines: list[Headline]) -> rollouts.RolloutArtifact:
    from varro.generation import generate_rollouts

    loaded = ctx.models.load(plan.checkpoint)
    prompts = [(h.id, prompt_ids(ctx.cfg, loaded.tokenizer, h, plan.date)) for h in headlines]
    seeds = {
        (h.id, i): derive_seed(plan.base_seed, plan.date, h.id, i) for h in headlines for i in range(plan.group_size)
    }
    from varro.model.forward import resolve

    rows, kernels = _batch_rows(ctx, plan, loaded), ctx.cfg.model.kernels
    ctx.log.info(
        "generating",
        date=plan.date,
        headlines=len(headlines),
        group_size=plan.group_size,
        batch_rows=rows,
        kernels=f"{kernels} -> {resolve(loaded.model, kernels)}",
    )
    records = generate_rollouts(
        loaded,
        prompts,
        group_size=plan.group_size,
        sampler=plan.sampler,
        seeds=seeds,
        batch_size=rows,
        eos_token_ids=loaded.tokenizer.eos_token_ids,
        kernels=kernels,
    )
    return rollouts.RolloutArtifact(
        checkpoint_sha256=plan.checkpoint.sha256,
        sampler=plan.sampler,
        prompts=[rollouts.PromptRecord(headline_id=hid, prompt_ids=ids) for hid, ids in prompts],
        rollouts=records,
    )


def _batch_rows(ctx: JobContext, plan: Plan, loaded: LoadedModel) -> int:
    from varro.generation import batch_rows

    gen = ctx.cfg.generation
    return batch_rows(
        gen.batch_size,
        loaded.model,
        group_size=plan.group_size,
        max_tokens=plan.sampler.max_tokens,
        kv_cache_mb=gen.kv_cache_mb,
    )


def _record(ctx: JobContext, plan: Plan, artifact: rollouts.RolloutArtifact, wall_s: float) -> Appended:
    ref = ctx.artifacts.put(rollouts.encode(artifact), kind=ARTIFACT_KIND)
    prompt_len = {p.headline_id: len(p.prompt_ids) for p in artifact.prompts}
    groups = [
        RolloutGroup(
            headline_id=p.headline_id,
            prompt_tokens=prompt_len[p.headline_id],
            rollouts=[
                RolloutSummary(
                    index=r.index,
                    seed=r.seed,
                    text=r.text,
                    n_tokens=len(r.response_ids),
                    truncated=r.truncated,
                    structure_score=r.structure_score,
                )
                for r in artifact.rollouts
                if r.headline_id == p.headline_id
            ],
        )
        for p in artifact.prompts
    ]
    records = artifact.rollouts
    stats = GenerationStats(
        headlines=len(groups),
        rollouts=len(records),
        generated_tokens=sum(len(r.response_ids) for r in records),
        truncated=sum(r.truncated for r in records),
        avg_structure_score=sum(r.structure_score for r in records) / len(records) if records else 0.0,
        wall_s=round(wall_s, 3),
    )
    fetched = plan.headlines_event
    event = RolloutsGenerated(
        event_id=plan.event_id,
        ns=ctx.ns,
        date=plan.date,
        correlation_id=ctx.correlation_id or fetched.correlation_id,
        causation_id=fetched.event_id,
        headlines_event_id=fetched.event_id,
        checkpoint=plan.checkpoint,
        sampler=plan.sampler,
        group_size=plan.group_size,
        base_seed=plan.base_seed,
        prompt_hash=plan.prompt_hash,
        groups=groups,
        artifact=ref,
        stats=stats,
        forced=plan.forced,
    )
    appended = ctx.store.append(event)
    ctx.log.info(
        "rollouts generated",
        date=plan.date,
        headlines=stats.headlines,
        rollouts=stats.rollouts,
        tokens=stats.generated_tokens,
        structure=round(stats.avg_structure_score, 3),
        wall_s=stats.wall_s,
        created=appended.created,
        forced=plan.forced,
    )
    return appended
