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
for it. After the event is recorded, the dated projection
`final_model_YYYYMMDD` is pointed at the new checkpoint, and the rolling
`final_model` too unless a later date has already been trained (a backfill never
moves the rolling checkpoint backwards).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import msgspec
from mlx.utils import tree_flatten

from events.ids import canonical_hash, derive_event_id, validate_date
from events.schema import CheckpointRef, EpochTrained, Ranked, RolloutsGenerated
from events.store import Appended
from jobs.context import JobContext, base_checkpoint, derive_seed, force_input, parent_checkpoint
from jobs.daily import run_seed
from varro import rollouts
from varro.checkpoints import TrainerState, load_trainer_state, publish, save_checkpoint
from varro.gspo.batch import build_sequences
from varro.gspo.trainer import PriorState, train_epoch


class TrainInputError(RuntimeError):
    """Day `date` has nothing recorded to train on yet (no `Ranked`, or its roll-outs are missing)."""


def _private_copy(model: nn.Module) -> nn.Module:
    """A new module holding the same (immutable) arrays: training replaces them only in the copy."""
    copy = type(model)(model.args)
    copy.load_weights(tree_flatten(model.parameters()))
    mx.eval(copy.parameters())
    return copy


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
    ranked = ctx.store.latest("Ranked", date)
    if not isinstance(ranked, Ranked):
        raise TrainInputError(f"no Ranked event for {date} in namespace {ctx.ns}: rank the day first")
    generated = ctx.store.get(ranked.rollouts_event_id)
    if not isinstance(generated, RolloutsGenerated):
        raise TrainInputError(f"Ranked({date}) names roll-outs {ranked.rollouts_event_id}, which are not recorded")
    parent = parent_checkpoint(ctx, date) if parent is None else parent
    seed = derive_seed(run_seed(ctx, date), "train") if seed is None else seed

    inputs = [ranked.event_id, parent.sha256, cfg.section_hash("train"), f"seed:{seed}"]
    if force:
        inputs.append(force_input(ctx.store, "EpochTrained", date))
    event_id = derive_event_id(ctx.ns, "EpochTrained", date, inputs)
    existing = ctx.store.get(event_id)
    if existing is not None:
        ctx.log.info("train.exists", event_id=event_id)
        # a crash between append and publish left the links behind; publishing is idempotent
        later = any(e.date > date for e in _trained(ctx))
        publish(existing.checkpoint, cfg.data_path, ctx.ns, date, rolling=not later)
        return Appended(entry_id=ctx.store.entry_id(event_id), event=existing, created=False)

    artifact = rollouts.decode(ctx.artifacts.get(generated.artifact))
    groups = build_sequences(artifact, ranked.groups)
    loaded = ctx.models.load(parent)
    parent_dir = Path(loaded.path)
    policy = _private_copy(loaded.model)
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
        data_dir=cfg.data_path,
        base_model=parent.base_model,
        trainer_state=TrainerState(
            step=result.step, ema_baseline=result.ema_baseline, seed=seed, parent_sha256=parent.sha256
        ),
        optimizer_state=result.optimizer_state,
        parent_manifest=loaded.manifest,
    )
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
    later = any(e.date > date for e in _trained(ctx))
    publish(checkpoint, cfg.data_path, ctx.ns, date, rolling=not later)
    ctx.log.info(
        "train.done",
        event_id=event_id,
        checkpoint=checkpoint.sha256,
        loss=result.metrics.loss,
        improvement=result.metrics.improvement,
        wall_s=round(result.metrics.wall_s, 2),
    )
    return appended


def _trained(ctx: JobContext) -> list[EpochTrained]:
    return [stored.event for stored in ctx.store.read(types=["EpochTrained"])]
