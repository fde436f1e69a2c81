"""Namespace operations without the command line: one day state, backfill plans,
override and replay refusals, and parent look-ups that never scan the stream."""

from __future__ import annotations

import msgspec
import pytest

from events.ids import shift_date
from events.schema import CheckpointRef
from jobs.context import JobContext, parent_checkpoint, trained_after
from varro.artifacts import ArtifactStore
from varro.config import load_config
from varro.errors import UsageProblem
from workers.dispatcher import FETCH_QUEUE
from workers.operations import (
    day_state,
    namespace_status,
    override,
    plan_backfill,
    replay_dates,
    stage_grid,
    stranded_days,
)
from workers.queues import queue
from workers.runtime import Runtime, set_runtime

NS = "ops"
DAY = "2025-01-02"


@pytest.fixture
def runtime(tmp_path, redis_client):
    cfg = load_config(overrides={"ns": NS, "data_dir": str(tmp_path), "workers": {"retries": 0}}, environ={})
    rt = Runtime(cfg=cfg, redis=redis_client, artifacts=ArtifactStore(tmp_path), models=None)
    set_runtime(rt)
    yield rt
    set_runtime(None)


def _append(rt, events, *names):
    for name in names:
        rt.store(NS).append(events[name])


@pytest.fixture
def day(sample_events):
    """One day's realistic events in namespace `ops`, keyed by type name (Ranked needs the next day)."""
    events = sample_events(NS, DAY)
    return {type(e).__name__ if e.date == DAY else "Outcome": e for e in events.values()}


def test_one_day_state_from_the_log_and_the_chain_rule(runtime, day):
    store = runtime.store(NS)
    assert day_state(stage_grid(runtime, NS), store, DAY) == "missing"
    _append(runtime, day, "DailyRunRequested", "HeadlinesFetched")
    assert day_state(stage_grid(runtime, NS), store, DAY) == "incomplete"  # fetched, never generated
    _append(runtime, day, "RolloutsGenerated")
    assert day_state(stage_grid(runtime, NS), store, DAY) == "done"
    # the next day is fetched but yesterday's roll-outs were never ranked: its chain stopped short
    _append(runtime, day, "Outcome")
    next_day = shift_date(DAY, 1)
    assert day_state(stage_grid(runtime, NS), store, next_day) == "incomplete"


def test_a_queued_job_makes_its_stage_running(runtime, day):
    _append(runtime, day, "DailyRunRequested", "HeadlinesFetched")
    queue(FETCH_QUEUE, runtime.redis).enqueue_call(
        "workers.tasks.generate", kwargs={}, meta={"ns": NS, "date": DAY, "stage": "generate"}
    )
    status = namespace_status(runtime, NS)
    assert status.grid[DAY]["generate"] == "running"
    assert status.states[DAY] == "running"
    assert status.queued[FETCH_QUEUE] == 1


def test_backfill_plans_missing_and_stopped_days_and_refuses_rewriting_in_place(runtime, day):
    _append(runtime, day, "DailyRunRequested", "HeadlinesFetched", "RolloutsGenerated")
    dates = [shift_date(DAY, -1), DAY, shift_date(DAY, 1)]
    plan = plan_backfill(runtime, NS, dates, "missing", None)
    assert [(d, s) for d, s, _ in plan.rows] == [(dates[0], "missing"), (DAY, "done"), (dates[2], "missing")]
    assert plan.todo == [dates[0], dates[2]] and plan.target == NS
    assert plan_backfill(runtime, NS, dates, "failed", None).todo == []
    assert plan_backfill(runtime, NS, dates, "all", "fork").todo == dates
    with pytest.raises(UsageProblem, match="give --into NEW"):
        plan_backfill(runtime, NS, dates, "all", None)


def test_override_refuses_a_day_without_rollouts_before_anything_is_queued(runtime, day):
    _append(runtime, day, "DailyRunRequested", "HeadlinesFetched")
    before = runtime.store(NS).count()
    with pytest.raises(UsageProblem, match=f"no roll-outs for {DAY}"):
        override(runtime, NS, DAY, shift_date(DAY, 1), force=False)
    with pytest.raises(UsageProblem, match="must be after"):
        override(runtime, NS, DAY, DAY, force=False)
    assert runtime.store(NS).count() == before
    assert queue("varro-model", runtime.redis).count == 0


def test_replay_dates_refuse_gaps_and_empty_ranges(runtime, day):
    with pytest.raises(UsageProblem, match="no recorded days"):
        replay_dates(runtime, NS, None, None)
    _append(runtime, day, "DailyRunRequested", "HeadlinesFetched")
    gap = msgspec.structs.replace(
        day["Outcome"], date=shift_date(DAY, 2), event_id="e" * 64, prev_hash="", recorded_at=""
    )
    runtime.store(NS).append(gap)
    assert replay_dates(runtime, NS, DAY, DAY) == [DAY]
    with pytest.raises(UsageProblem, match="has gaps"):
        replay_dates(runtime, NS, None, None)


def test_stranded_days_wait_for_an_outcome_day_that_never_came():
    grid = {
        "2025-01-01": {"fetch": "done", "generate": "done", "rank": "missing", "train": "missing"},
        "2025-01-03": {"fetch": "done", "generate": "done", "rank": "missing", "train": "missing"},
    }
    assert stranded_days(grid) == ["2025-01-01"]  # the last day is only waiting for tomorrow


class _NoScan:
    """An EventStore whose full read fails: look-ups must go through the indexes."""

    def __init__(self, store):
        self._store = store

    def read(self, *args, **kwargs):
        raise AssertionError("read the whole stream")

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_parent_checkpoint_uses_the_date_index_not_the_stream(runtime, sample_events):
    store = runtime.store(NS)
    for date in ("2025-01-02", "2025-01-05"):
        events = sample_events(NS, date).values()
        # outcomes (the next day's headlines) before the Ranked event that needs them
        for event in sorted(events, key=lambda e: type(e).__name__ not in ("DailyRunRequested", "HeadlinesFetched")):
            store.append(event)

    class Models:
        def base_path(self):
            return runtime.cfg.data_path / "base"

    # the base is the one the namespace's first roll-outs recorded, at this machine's path
    first = store.latest("RolloutsGenerated", "2025-01-02").checkpoint
    base = CheckpointRef(sha256=first.sha256, base_model=first.base_model, path=str(runtime.cfg.data_path / "base"))

    ctx = JobContext(cfg=runtime.cfg, store=_NoScan(store), artifacts=runtime.artifacts, models=Models())
    trained = {d: store.latest("EpochTrained", d).checkpoint for d in ("2025-01-02", "2025-01-05")}
    assert parent_checkpoint(ctx, "2025-01-02") == base
    assert parent_checkpoint(ctx, "2025-01-03") == trained["2025-01-02"]
    assert parent_checkpoint(ctx, "2025-01-09") == trained["2025-01-05"]
    assert trained_after(ctx, "2025-01-03") and not trained_after(ctx, "2025-01-05")


def test_a_permanent_error_fails_at_once_with_its_reason_while_others_are_retried(runtime):
    from workers.dispatcher import MODEL_QUEUE, Dispatcher, JobSpec
    from workers.inprocess import failed_jobs
    from workers.model_worker import ModelWorker

    cfg = msgspec.structs.replace(runtime.cfg, workers=msgspec.structs.replace(runtime.cfg.workers, retries=3))
    dispatcher = Dispatcher(runtime.redis, cfg)
    # nothing was generated for DAY: ranking it is a missing predecessor, which no retry can fix
    dispatcher.enqueue(JobSpec("rank", NS, DAY, cause="test", correlation_id="c", kwargs={}))
    model_queue = queue(MODEL_QUEUE, runtime.redis)
    worker = ModelWorker([model_queue], connection=runtime.redis)
    runs: list[str] = []
    worker.push_exc_handler(lambda job, *exc_info: runs.append(job.id) or True)
    worker.work(burst=True, with_scheduler=False)
    assert len(runs) == 1  # it ran once: not retried three more times
    [failure] = failed_jobs(runtime, NS)
    assert failure.stage == "rank" and "no RolloutsGenerated event for 2025-01-02" in failure.error
    assert model_queue.fetch_job(failure.job_id).retries_left == 0 and model_queue.count == 0
