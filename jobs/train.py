"""Train: one GSPO epoch on day `date`'s ranked roll-outs -> `EpochTrained` and the next checkpoint.

Inputs come only from the log: the latest `Ranked(date)`, the
`RolloutsGenerated` it ranked (whose artifact holds the exact token ids and
behaviour log-probs), and the parent checkpoint (by default the output of the
latest earlier `EpochTrained`, else the base model). The event id hashes the
ranked event, the parent checkpoint, the train config and the seed, so a re-run
on the same inputs returns the recorded event without training.

The policy is a private copy of the cached parent (the cache's model is never
mutated). With β > 0 the frozen reference is the namespace's base model, so the
KL keeps the whole lineage near where it started; with β = 0 nothing is loaded
for it. The new checkpoint is stored (with a bucket, uploaded
whole) before its event is recorded. After the event is recorded, the dated
projection `final_model_YYYYMMDD` is pointed at the new checkpoint, and the
rolling `final_model` too unless a later date has already been trained (a
backfill never moves the rolling checkpoint backwards); with a bucket the links
are left to `varro rebuild` on the machine that wants them.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from events.errors import PermanentError
from events.ids import canonical_hash, validate_date
from events.schema import CheckpointRef, EpochTrained, Ranked, RolloutsGenerated
from events.store import Appended
from jobs.context import JobContext, base_checkpoint, derive_seed, identify, parent_checkpoint, trained_after
from jobs.daily import run_seed
from varro import rollouts
from varro.checkpoints import TrainerState, load_trainer_state, save_checkpoint
from varro.gspo.batch import build_sequences
from varro.gspo.trainer import PriorState, train_epoch
from varro.model.cache import trainable_copy


class TrainInputError(PermanentError, RuntimeError):
    """Day `date` has nothing recorded to train on yet (no `Ranked`, or its roll-outs are missing)."""


def train_job(
    ctx: JobContext,
    date: str,
    *,
    parent: CheckpointRef | None = None,
    seed: int | None = None,
    force: bool = False,
) -> Appended:
    """Train day `date` once; returns the store's `Appended` (existing or new)."""
    validate_date(date)
    cfg = ctx.cfg
    ranked = ctx.store.latest_of(Ranked, date)
    if ranked is None:
        raise TrainInputError(f"no Ranked event for {date} in namespace {ctx.ns}: rank the day first")
    generated = ctx.store.get_of(RolloutsGenerated, ranked.rollouts_event_id)
    if generated is None:
        raise TrainInputError(f"Ranked({date}) names roll-outs {ranked.rollouts_event_id}, which are not recorded")
    parent = parent_checkpoint(ctx, date) if parent is None else parent
    seed = derive_seed(run_seed(ctx, date), "train") if seed is None else seed

    inputs = [ranked.event_id, parent.sha256, cfg.section_hash("train"), f"seed:{seed}"]
    identity = identify(ctx, "EpochTrained", date, inputs, force=force)
    if identity.recorded is not None:
        recorded = identity.recorded.event
        assert isinstance(recorded, EpochTrained)  # the id names its type
        # a crash between append and publish left the links behind; publishing is idempotent
        ctx.artifacts.publish(recorded.checkpoint, ctx.ns, date, rolling=not trained_after(ctx, date))
        return identity.recorded
    event_id = identity.event_id

    artifact = rollouts.decode(ctx.artifacts.get(generated.artifact))
    groups = build_sequences(artifact, ranked.groups)
    loaded = ctx.models.load(parent)
    parent_dir = Path(loaded.path)
    policy = trainable_copy(loaded.model)
    # read from disk now, so checked against the parent's manifest (verified when it was loaded)
    state, optimizer = load_trainer_state(parent_dir, loaded.manifest)
    reference = ctx.models.load(base_checkpoint(ctx)).model if cfg.train.beta > 0 else None

    result = train_epoch(
        policy,
        groups,
        cfg.train,
        seed=seed,
        prior=PriorState(optimizer=optimizer, step=state.step, ema_baseline=state.ema_baseline),
        reference=reference,
        temperature=generated.sampler.temperature,
        kernels=cfg.model.kernels,
    )
    checkpoint = save_checkpoint(
        result.model,
        parent_dir=parent_dir,
        data_dir=ctx.artifacts.checkpoint_root,
        base_model=parent.base_model,
        trainer_state=TrainerState(
            step=result.step, ema_baseline=result.ema_baseline, seed=seed, parent_sha256=parent.sha256
        ),
        optimizer_state=result.optimizer_state,
        parent_manifest=loaded.manifest,
    )
    checkpoint = ctx.artifacts.store_checkpoint(checkpoint)  # visible to every worker before it is recorded
    event = EpochTrained(
        event_id=event_id,
        ns=ctx.ns,
        date=date,
        correlation_id=ctx.correlation_id or ranked.correlation_id,
        causation_id=ranked.event_id,
        ranked_event_id=ranked.event_id,
        rollouts_event_id=generated.event_id,
        parent_checkpoint=parent,
        checkpoint=checkpoint,
        config_hash=cfg.section_hash("train"),
        data_hashes=[generated.artifact.sha256, canonical_hash(msgspec.to_builtins(ranked.groups))],
        variant=cfg.train.variant,
        pi_old=cfg.train.pi_old,
        optimizer_state=result.optimizer_origin,
        seed=seed,
        metrics=result.metrics,
        forced=force,
    )
    appended = ctx.store.append(event)
    ctx.artifacts.publish(checkpoint, ctx.ns, date, rolling=not trained_after(ctx, date))
    ctx.log.info(
        "train.done",
        event_id=event_id,
        checkpoint=checkpoint.sha256,
        loss=result.metrics.loss,
        improvement=result.metrics.improvement,
        wall_s=round(result.metrics.wall_s, 2),
    )
    return appended
