"""The train job end to end on a real event store: inputs from the log, one
EpochTrained, a loadable checkpoint, projections, idempotence and lineage."""

import hashlib
import os

import mlx_lm
import msgspec
import numpy as np
import pytest
from gspo_fixtures import VOCAB, tiny_model, write_model_dir
from mlx.utils import tree_flatten

import jobs.train as train_module
from events.ids import shift_date
from events.schema import EpochTrained, SamplerSpec
from jobs.context import JobContext
from jobs.train import TrainInputError, train_job
from varro import rollouts
from varro.artifacts import ArtifactStore
from varro.checkpoints import checkpoint_sha256, dated_path, load_trainer_state, rolling_path
from varro.config import load_config
from varro.integrity import IntegrityError, PermanentError
from varro.model.cache import ModelCache

DAY = "2025-01-02"


def rollout_artifact():
    rng = np.random.default_rng(0)
    records = []
    for i in range(8):
        resp = [int(t) for t in rng.integers(1, VOCAB, 5 + i)] + [0]
        records.append(
            rollouts.RolloutRecord(
                headline_id="h1",
                index=i,
                seed=i,
                response_ids=resp,
                logprobs=[-4.5] * len(resp),
                truncated=False,
                text="",
                structure_score=0.5,
            )
        )
    return rollouts.RolloutArtifact(
        checkpoint_sha256="c0" * 32,
        sampler=SamplerSpec(),
        prompts=[rollouts.PromptRecord(headline_id="h1", prompt_ids=[3, 4, 5, 6])],
        rollouts=records,
    )


@pytest.fixture
def ctx(tmp_path, event_store, sample_events):
    base = write_model_dir(tiny_model(4), tmp_path / "base")
    cfg = load_config(
        overrides={
            "ns": "gs",
            "data_dir": str(tmp_path / "data"),
            "model": {"base": str(base)},
            "train": {"minibatches": 2, "microbatch_size": 4, "learning_rate": 1e-3},
        },
        environ={},
    )
    artifacts = ArtifactStore(cfg.data_path)
    art = artifacts.put(rollouts.encode(rollout_artifact()), kind="rollouts")
    store = event_store("gs")
    for date in (DAY, shift_date(DAY, 1)):
        events = sample_events("gs", date)
        for name in ("HeadlinesFetched", "HeadlinesFetched:outcome", "RolloutsGenerated", "Ranked"):
            event = events[name]
            if name == "RolloutsGenerated":
                event = msgspec.structs.replace(event, artifact=art)
            store.append(event)
    return JobContext(cfg=cfg, store=store, artifacts=artifacts, models=ModelCache(cfg))


def params(model):
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def test_train_job_records_one_epoch_and_a_loadable_checkpoint(ctx):
    cached_before = params(ctx.models.load(ctx.models.base_ref()).model)
    appended = train_job(ctx, DAY, seed=7)
    event = appended.event
    assert appended.created and isinstance(event, EpochTrained)
    assert event.parent_checkpoint == ctx.models.base_ref()
    assert event.ranked_event_id == ctx.store.latest("Ranked", DAY).event_id
    assert (event.variant, event.pi_old, event.optimizer_state, event.seed) == ("gspo", "recompute", "fresh", 7)
    assert event.config_hash == ctx.cfg.section_hash("train")
    assert event.data_hashes[0] == ctx.store.get(event.rollouts_event_id).artifact.sha256
    assert event.metrics.steps == 2 and event.metrics.sequences == 8
    assert event.metrics.avg_reward_unscaled_kind == "raw_score"  # the sample judge gave raw scores
    path = ctx.cfg.data_path / "checkpoints" / event.checkpoint.sha256
    assert checkpoint_sha256(path) == event.checkpoint.sha256
    assert checkpoint_sha256(rolling_path(ctx.cfg.data_path, "gs")) == event.checkpoint.sha256
    assert checkpoint_sha256(dated_path(ctx.cfg.data_path, "gs", DAY)) == event.checkpoint.sha256
    model, _ = mlx_lm.load(str(rolling_path(ctx.cfg.data_path, "gs")))
    assert params(model).keys() == cached_before.keys()
    assert any(not np.array_equal(params(model)[k], v) for k, v in cached_before.items())
    # the cached parent model was not touched by training
    for k, v in params(ctx.models.load(ctx.models.base_ref()).model).items():
        np.testing.assert_array_equal(v, cached_before[k])
    state, optimizer = load_trainer_state(path)
    assert state.step == 2 and state.seed == 7 and state.parent_sha256 == event.parent_checkpoint.sha256
    assert optimizer["step"].item() == 2


def test_rerun_returns_the_recorded_event_without_training(ctx, monkeypatch):
    first = train_job(ctx, DAY, seed=7)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(train_module, "train_epoch", no_training)
    again = train_job(ctx, DAY, seed=7)
    assert not again.created and again.event == first.event and again.entry_id == first.entry_id


def test_next_day_trains_from_the_previous_checkpoint_and_resumes_the_optimizer(ctx):
    day1 = train_job(ctx, DAY, seed=7).event
    day2 = train_job(ctx, shift_date(DAY, 1), seed=8).event
    assert day2.parent_checkpoint.sha256 == day1.checkpoint.sha256
    assert day2.optimizer_state == "resumed"
    assert load_trainer_state(day2.checkpoint.path)[0].step == 4
    assert checkpoint_sha256(rolling_path(ctx.cfg.data_path, "gs")) == day2.checkpoint.sha256
    # re-training day 1 (forced) keeps the rolling checkpoint on the later day
    forced = train_job(ctx, DAY, seed=7, force=True)
    assert forced.created and forced.event.forced and forced.event.event_id != day1.event_id
    assert checkpoint_sha256(rolling_path(ctx.cfg.data_path, "gs")) == day2.checkpoint.sha256
    assert forced.event.checkpoint.sha256 == day1.checkpoint.sha256  # same inputs, same bytes


def test_missing_ranking_is_a_clear_error(ctx):
    with pytest.raises(TrainInputError, match="no Ranked event for 2025-02-01"):
        train_job(ctx, "2025-02-01")
    with pytest.raises(ValueError, match="invalid date"):
        train_job(ctx, "yesterday")


def test_reference_is_loaded_only_with_a_kl_penalty(ctx, monkeypatch):
    loads = []
    original = ctx.models.load
    monkeypatch.setattr(ctx.models, "load", lambda ref: loads.append(ref) or original(ref))
    plain = train_job(ctx, DAY, seed=7).event
    assert len(loads) == 1 and plain.metrics.kl_ref_k3 is None
    ctx.cfg = msgspec.structs.replace(ctx.cfg, train=msgspec.structs.replace(ctx.cfg.train, beta=0.1))
    penalised = train_job(ctx, DAY, seed=7).event  # another train config: another event
    assert penalised.event_id != plain.event_id
    assert loads[1:] == [ctx.models.base_ref(), ctx.models.base_ref()]  # the parent, then the reference
    assert penalised.metrics.kl_ref_k3 >= 0 and penalised.metrics.kl_ref_logratio is not None


def _flip_one_bit_keeping_mtime(path, offset: int = -1) -> None:
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns


@pytest.mark.parametrize("in_memory", [True, False], ids=["parent-held-in-memory", "fresh-worker"])
def test_a_corrupted_parent_optimizer_is_refused_and_nothing_is_recorded(ctx, in_memory):
    day1 = train_job(ctx, DAY, seed=7).event
    parent = ctx.cfg.data_path / "checkpoints" / day1.checkpoint.sha256
    if in_memory:
        assert ctx.models.load(day1.checkpoint).path == parent  # the worker holds the parent, verified
    else:
        ctx.models = ModelCache(ctx.cfg)
    optimizer = parent / "optimizer.safetensors"
    recorded = hashlib.sha256(optimizer.read_bytes()).hexdigest()
    _flip_one_bit_keeping_mtime(optimizer)
    corrupted = hashlib.sha256(optimizer.read_bytes()).hexdigest()
    stored_before = sorted(os.listdir(ctx.cfg.data_path / "checkpoints"))
    entries_before = ctx.store.count()

    with pytest.raises(IntegrityError) as failure:
        train_job(ctx, shift_date(DAY, 1), seed=8)
    message = str(failure.value)
    assert str(optimizer) in message and recorded in message and corrupted in message
    assert isinstance(failure.value, PermanentError)
    assert ctx.store.count() == entries_before
    assert ctx.store.latest("EpochTrained", shift_date(DAY, 1)) is None
    assert sorted(os.listdir(ctx.cfg.data_path / "checkpoints")) == stored_before


def test_a_parent_tokenizer_file_changed_after_loading_is_not_copied_into_the_child(ctx):
    day1 = train_job(ctx, DAY, seed=7).event
    parent = ctx.models.load(day1.checkpoint).path  # held in memory from here on
    tokenizer = parent / "tokenizer.json"
    _flip_one_bit_keeping_mtime(tokenizer, offset=10)
    with pytest.raises(IntegrityError, match=f"corrupted file {tokenizer}"):
        train_job(ctx, shift_date(DAY, 1), seed=8)
    assert ctx.store.latest("EpochTrained", shift_date(DAY, 1)) is None


def test_a_forced_re_run_repairs_a_corrupted_checkpoint(ctx):
    day1 = train_job(ctx, DAY, seed=7).event
    stored = ctx.cfg.data_path / "checkpoints" / day1.checkpoint.sha256
    _flip_one_bit_keeping_mtime(stored / "optimizer.safetensors")
    assert checkpoint_sha256(stored) != day1.checkpoint.sha256
    forced = train_job(ctx, DAY, seed=7, force=True).event  # same inputs, so the same bytes are written again
    assert forced.checkpoint.sha256 == day1.checkpoint.sha256
    assert checkpoint_sha256(stored) == day1.checkpoint.sha256
    assert train_job(ctx, shift_date(DAY, 1), seed=8).created
