"""The dispatcher's chain decisions and its at-least-once handling, on a real server.

These use only the fetch stage (no model), so they are fast; the full chain
through the model stages is in test_pipeline_e2e.py.
"""

from __future__ import annotations

import pytest

from events.ids import shift_date
from jobs.context import JobContext
from jobs.daily import request_day
from varro.artifacts import ArtifactStore
from varro.config import load_config
from workers.dispatcher import FETCH_QUEUE, MODEL_QUEUE, Dispatcher, plan
from workers.inprocess import unfinished_stages
from workers.queues import queue
from workers.runtime import Runtime, set_runtime

DAY = "2025-08-05"


@pytest.fixture
def runtime(tmp_path, redis_client):
    cfg = load_config(overrides={"ns": "disp", "data_dir": str(tmp_path), "workers": {"retries": 0}}, environ={})
    rt = Runtime(cfg=cfg, redis=redis_client, artifacts=ArtifactStore(tmp_path), models=None)
    set_runtime(rt)
    yield rt
    set_runtime(None)


def specs(rt, event):
    return [(s.stage, s.date, s.kwargs) for s in plan(event, rt.store("disp"))]


def ctx_of(rt) -> JobContext:
    return JobContext(cfg=rt.cfg, store=rt.store("disp"), artifacts=rt.artifacts, models=None)


def test_request_plans_fetch_and_fetch_plans_generate_without_earlier_rollouts(runtime):
    request = request_day(ctx_of(runtime), DAY, trigger="manual", source="sample").event
    sample = {"kind": "sample", "paths": [], "namespace": None}  # the recorded HeadlineSource, as JSON for RQ
    assert specs(runtime, request) == [("fetch", DAY, {"source": sample, "force": False})]

    from jobs.fetch import fetch_headlines

    fetched = fetch_headlines(ctx_of(runtime), DAY, source="sample").event
    assert specs(runtime, fetched) == [("generate", DAY, {"force": False})]


def test_fetch_plans_rank_of_yesterday_when_yesterday_has_rollouts(runtime, sample_events):
    store = runtime.store("disp")
    yesterday = shift_date(DAY, -1)
    events = sample_events("disp", yesterday)
    for event in events.values():
        if event.date == yesterday and type(event).__name__ in (
            "DailyRunRequested",
            "HeadlinesFetched",
            "RolloutsGenerated",
        ):
            store.append(event)
    from jobs.fetch import fetch_headlines

    fetched = fetch_headlines(ctx_of(runtime), DAY, source="sample").event
    assert specs(runtime, fetched) == [("rank", yesterday, {"outcome_date": DAY, "force": False})]
    assert unfinished_stages(store, DAY) == [f"rank {yesterday}", f"generate {DAY}"]


def test_dispatcher_enqueues_unique_job_and_acks_after_enqueue(runtime, redis_client):
    request_day(ctx_of(runtime), DAY, trigger="manual", source="sample")
    dispatcher = Dispatcher(redis_client, runtime.cfg, name="d1")
    assert dispatcher.step("disp") == 1
    fetch_queue = queue(FETCH_QUEUE, redis_client)
    assert fetch_queue.count == 1
    assert dispatcher.consumer("disp").pending() == 0
    # a second plan of the same event yields the same job id, which RQ refuses
    spec = plan(runtime.store("disp").latest("DailyRunRequested", DAY), runtime.store("disp"))[0]
    assert dispatcher.enqueue(spec) is False
    assert fetch_queue.count == 1


def test_killed_dispatcher_is_recovered_without_a_duplicate_event(runtime, redis_client):
    request_day(ctx_of(runtime), DAY, trigger="manual", source="sample")
    crashed = Dispatcher(redis_client, runtime.cfg, name="crashed", min_idle_ms=0)
    for delivery in crashed.consumer("disp").read(count=10, block_ms=None):
        for spec in plan(delivery.event, runtime.store("disp")):
            crashed.enqueue(spec)
    # it dies before acking; the fetch job even runs before recovery
    assert crashed.consumer("disp").pending() == 1
    from workers.model_worker import ModelWorker

    ModelWorker([queue(FETCH_QUEUE, redis_client)], connection=redis_client).work(burst=True)
    recovered = Dispatcher(redis_client, runtime.cfg, name="recovered", min_idle_ms=0)
    assert recovered.step("disp") == 2  # the reclaimed request and the new HeadlinesFetched
    assert recovered.consumer("disp").pending() == 0
    assert queue(FETCH_QUEUE, redis_client).count == 0  # the re-planned fetch was refused
    assert len(runtime.store("disp").all_for("HeadlinesFetched", DAY)) == 1
    model_queue = queue(MODEL_QUEUE, redis_client)
    assert [job.meta["stage"] for job in model_queue.jobs] == ["generate"]


def test_same_day_requested_by_cron_and_by_hand_is_one_run(runtime):
    first = request_day(ctx_of(runtime), DAY, trigger="cron", source="sample")
    second = request_day(ctx_of(runtime), DAY, trigger="manual", source="sample", seed=7)
    assert first.created and not second.created
    assert second.event == first.event
    forced = request_day(ctx_of(runtime), DAY, trigger="manual", source="sample", force=True)
    assert forced.created and forced.event.forced
    assert len(runtime.store("disp").all_for("DailyRunRequested", DAY)) == 2


def test_fetch_waits_while_yesterdays_chain_is_still_running(runtime):
    """Days requested close together: today's generation must wait for yesterday's
    training, or it would run on the checkpoint from before yesterday."""
    from jobs.fetch import fetch_headlines

    yesterday = shift_date(DAY, -1)
    fetch_headlines(ctx_of(runtime), yesterday, source="sample")
    fetched = fetch_headlines(ctx_of(runtime), DAY, source="sample").event
    assert specs(runtime, fetched) == []


def test_forced_fetch_regenerates_the_day_as_forced(runtime):
    from jobs.fetch import fetch_headlines

    fetch_headlines(ctx_of(runtime), DAY, source="sample")
    forced = fetch_headlines(ctx_of(runtime), DAY, source="sample", force=True).event
    assert forced.forced
    assert specs(runtime, forced) == [("generate", DAY, {"force": True})]


def test_an_event_naming_another_namespace_is_dead_lettered_not_planned(runtime, redis_client):
    from events.consumer import Consumer
    from events.store import stream_key
    from workers.dispatcher import GROUP, ForeignEvent

    request_day(runtime.context("victim"), DAY, trigger="manual", source="sample")
    ((_, fields),) = redis_client.xrange(stream_key("victim"))
    redis_client.xadd(stream_key("disp"), fields)  # a valid event, appended to another namespace's stream
    victim_event = runtime.store("victim").latest("DailyRunRequested", DAY)
    with pytest.raises(ForeignEvent, match="belongs to namespace 'victim', not 'disp'"):
        plan(victim_event, runtime.store("disp"))

    dispatcher = Dispatcher(redis_client, runtime.cfg, name="d1")
    dispatcher.step("disp")
    assert queue(FETCH_QUEUE, redis_client).count == 0 and queue(MODEL_QUEUE, redis_client).count == 0
    (dead,) = Consumer(redis_client, "disp", GROUP, "status").dead_letters()
    assert dead.reason.startswith("foreign:") and "'victim'" in dead.reason
    assert dispatcher.consumer("disp").pending() == 0


def test_an_event_the_dispatcher_cannot_plan_is_retried_then_dead_lettered_with_its_reason(runtime, monkeypatch):
    import workers.dispatcher as dispatcher_module

    def broken_plan(*args, **kwargs):
        raise RuntimeError("planner bug")

    monkeypatch.setattr(dispatcher_module, "plan", broken_plan)
    cfg = runtime.cfg
    request_day(ctx_of(runtime), DAY, trigger="manual", source="sample")
    dispatcher = Dispatcher(runtime.redis, cfg, name="d-broken", min_idle_ms=0)
    for _ in range(cfg.workers.max_deliveries + 1):  # each step reclaims the entry and fails it again
        dispatcher.step("disp")
    dead = dispatcher.consumer("disp").dead_letters()
    assert len(dead) == 1 and "RuntimeError: planner bug" in dead[0].reason
    assert dispatcher.consumer("disp").pending() == 0  # acked once dead-lettered: the stream moves on
    assert queue(FETCH_QUEUE, runtime.redis).count == 0  # nothing was enqueued


def test_a_day_recorded_with_another_model_config_gets_a_model_cache_of_its_own(runtime):
    """Runtime.context(ns, date) runs a day with the config it was requested with: a different model
    section swaps the process's model cache; the same one keeps it (the loaded model stays)."""
    import msgspec

    from varro.model.cache import ModelCache

    runtime.models = ModelCache(runtime.cfg)
    kept = runtime.models
    request_day(ctx_of(runtime), DAY, trigger="manual", source="sample")
    assert runtime.context("disp", DAY).models is kept  # recorded with the runtime's own model section
    other = msgspec.structs.replace(runtime.cfg, model=msgspec.structs.replace(runtime.cfg.model, kernels="mlx"))
    later = shift_date(DAY, 1)
    request_day(
        JobContext(cfg=other, store=runtime.store("disp"), artifacts=runtime.artifacts, models=None),
        later,
        trigger="manual",
        source="sample",
    )
    ctx = runtime.context("disp", later)
    assert ctx.cfg.model.kernels == "mlx" and ctx.models is runtime.models is not kept
    assert runtime.models.cfg.model.kernels == "mlx"
