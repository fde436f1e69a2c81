"""The cron path on a real server, beyond "the scheduler started": a due schedule entry
enqueues the daily job once, however many schedulers run, and a real worker running
that job records the request for the day the entry fired on."""

from __future__ import annotations

import datetime as dt

import pytest

from events.ids import today_utc
from events.schema import DailyRunRequested
from varro.artifacts import ArtifactStore
from varro.config import load_config
from workers.dispatcher import FETCH_QUEUE
from workers.model_worker import ModelWorker
from workers.queues import queue
from workers.runtime import Runtime, set_runtime
from workers.schedule import DailySchedule

NS = "cron"


@pytest.fixture
def runtime(tmp_path, redis_client):
    # the default schedule (06:30 UTC) and daily source (rss: nothing is fetched here, only requested)
    cfg = load_config(overrides={"ns": NS, "data_dir": str(tmp_path), "workers": {"retries": 0}}, environ={})
    rt = Runtime(cfg=cfg, redis=redis_client, artifacts=ArtifactStore(tmp_path), models=None)
    set_runtime(rt)
    yield rt
    set_runtime(None)


def run_over(schedule: DailySchedule, readings: list[dt.datetime]) -> list[float]:
    """Run the schedule's loop over these wall-clock readings, then stop; what it would have slept."""
    pending = list(readings)
    slept: list[float] = []
    schedule.run(stop=lambda: not pending, now=lambda: pending.pop(0), sleep=slept.append)
    return slept


def test_a_due_entry_enqueues_the_daily_job_once_and_it_requests_that_day(runtime):
    today = dt.date.fromisoformat(today_utc())
    due = dt.datetime(today.year, today.month, today.day, 6, 30, tzinfo=dt.UTC)
    schedule = DailySchedule(runtime.redis, runtime.cfg)
    assert schedule.next_time(due - dt.timedelta(hours=1)) == due
    readings = [
        due - dt.timedelta(minutes=1),  # the loop starts: next firing today 06:30
        due - dt.timedelta(seconds=1),  # not yet due
        due,  # due: fires
        due + dt.timedelta(seconds=5),  # the next firing is tomorrow's
    ]
    slept = run_over(schedule, readings)
    assert slept == [1.0, 30.0]  # woke for the firing; then waits for the next in steps of at most 30 s

    fetch = queue(FETCH_QUEUE, runtime.redis)
    assert fetch.get_job_ids() == [schedule.job_id(due)]
    job = fetch.fetch_job(schedule.job_id(due))
    assert job.func_name == "workers.tasks.request_daily"
    assert job.kwargs == {"ns": NS, "source": "rss"}

    # a second scheduler running beside the first, over the same firing, adds nothing
    run_over(DailySchedule(runtime.redis, runtime.cfg), readings)
    assert fetch.get_job_ids() == [schedule.job_id(due)]

    ModelWorker([fetch], connection=runtime.redis).work(burst=True, with_scheduler=False)
    store = runtime.store(NS)
    assert store.dates("DailyRunRequested") == [today.isoformat()]
    requests = store.all_of(DailyRunRequested, today.isoformat())
    assert [(r.trigger, r.source.kind) for r in requests] == [("cron", "rss")]
    assert fetch.count == 0
