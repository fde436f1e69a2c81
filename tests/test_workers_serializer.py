"""Jobs travel as JSON: a pickle written into Redis is refused, never unpickled.

Anyone who can write to a shared Redis can overwrite a job's hash. With RQ's
default (pickle) serializer that ran the attacker's code in the worker and in
`varro status`; here each payload below would create a marker file if it were
ever unpickled, and the test checks that it is not.
"""

from __future__ import annotations

import pickle
import zlib
from base64 import b64encode
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobs.daily import request_day
from varro.artifacts import ArtifactStore
from varro.cli import main
from varro.config import load_config
from workers.dispatcher import FETCH_QUEUE, Dispatcher
from workers.model_worker import FetchWorker, ModelWorker
from workers.queues import fetch_job, queue
from workers.runtime import Runtime, set_runtime
from workers.schedule import DailySchedule

pytestmark = pytest.mark.timeout(120)

DAY = "2025-08-05"


class _Marker:
    """Unpickling this opens (so creates) the marker file: stands in for any code an attacker would run."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _evil(path: Path) -> bytes:
    payload = pickle.dumps(_Marker(path))
    probe = path.with_name(path.name + ".probe")
    pickle.loads(pickle.dumps(_Marker(probe))).close()  # the payload is live: unpickling it does create a file
    assert probe.exists()
    probe.unlink()
    return payload


@pytest.fixture
def runtime(tmp_path, redis_client):
    cfg = load_config(overrides={"ns": "ser", "data_dir": str(tmp_path), "workers": {"retries": 0}}, environ={})
    rt = Runtime(cfg=cfg, redis=redis_client, artifacts=ArtifactStore(tmp_path), models=None)
    set_runtime(rt)
    yield rt
    set_runtime(None)


def _enqueued_fetch(rt) -> str:
    request_day(rt.context("ser"), DAY, trigger="manual", source="sample")
    dispatcher = Dispatcher(rt.redis, rt.cfg, name="d")
    assert dispatcher.step("ser") == 1
    (job_id,) = queue(FETCH_QUEUE, rt.redis).get_job_ids()
    return job_id


def test_jobs_are_stored_as_json(runtime):
    job_id = _enqueued_fetch(runtime)
    data = zlib.decompress(runtime.redis.hget(f"rq:job:{job_id}", "data"))
    assert data.startswith(b'["workers.tasks.fetch"')
    assert runtime.redis.hget(f"rq:job:{job_id}", "meta").startswith(b"{")


@pytest.mark.parametrize("worker_class", [ModelWorker, FetchWorker])
def test_worker_refuses_a_pickled_job_payload(runtime, tmp_path, worker_class):
    job_id = _enqueued_fetch(runtime)
    marker = tmp_path / "pwned"
    runtime.redis.hset(f"rq:job:{job_id}", "data", zlib.compress(_evil(marker)))
    # even a worker built with pickle asked for explicitly reads JSON
    worker = worker_class([queue(FETCH_QUEUE, runtime.redis)], connection=runtime.redis, serializer="pickle")
    worker.work(burst=True)
    assert not marker.exists()
    assert job_id in queue(FETCH_QUEUE, runtime.redis).failed_job_registry.get_job_ids()
    assert runtime.store("ser").latest("HeadlinesFetched", DAY) is None
    assert fetch_job(FETCH_QUEUE, runtime.redis, job_id) is None  # not ours: left out, not decoded


def test_status_refuses_pickled_meta_and_results(runtime, tmp_path, redis_server):
    job_id = _enqueued_fetch(runtime)
    redis = runtime.redis
    queue(FETCH_QUEUE, redis).failed_job_registry.add(queue(FETCH_QUEUE, redis).fetch_job(job_id), ttl=600)
    meta_marker, result_marker, data_marker = tmp_path / "meta", tmp_path / "result", tmp_path / "data"
    redis.hset(f"rq:job:{job_id}", "meta", _evil(meta_marker))
    redis.hset(f"rq:job:{job_id}", "data", zlib.compress(_evil(data_marker)))
    stamp = int(datetime.now(UTC).timestamp() * 1000)
    redis.xadd(
        f"rq:results:{job_id}",
        {"type": 2, "return_value": b64encode(_evil(result_marker)), "worker_name": "w"},
        id=f"{stamp}-0",
    )
    result = CliRunner().invoke(
        main,
        ["status", "--ns", "ser", "--data-dir", str(tmp_path), "--redis-url", redis_server.url],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "namespace ser" in result.output
    assert not meta_marker.exists() and not result_marker.exists() and not data_marker.exists()


def test_a_failed_job_with_a_pickled_result_is_reported_not_decoded(runtime, tmp_path):
    from workers.inprocess import failed_jobs

    job_id = _enqueued_fetch(runtime)
    redis = runtime.redis
    q = queue(FETCH_QUEUE, redis)
    q.failed_job_registry.add(q.fetch_job(job_id), ttl=600)
    marker = tmp_path / "result"
    stamp = int(datetime.now(UTC).timestamp() * 1000)
    redis.xadd(f"rq:results:{job_id}", {"type": 2, "return_value": b64encode(_evil(marker))}, id=f"{stamp}-0")
    (failed,) = failed_jobs(runtime, "ser")
    assert failed.stage == "fetch" and "not JSON" in failed.error
    assert not marker.exists()


def test_schedule_enqueues_one_json_job_per_firing(runtime):
    cfg = load_config(overrides={"ns": "ser", "workers": {"cron": "30 6 * * *"}}, environ={})
    schedule = DailySchedule(runtime.redis, cfg)
    start = datetime(2025, 8, 5, 6, 0, tzinfo=UTC)
    assert schedule.next_time(start) == datetime(2025, 8, 5, 6, 30, tzinfo=UTC)
    clock = [start]
    fired: list[datetime] = []

    def sleep(seconds: float) -> None:
        clock[0] = clock[0] + timedelta(seconds=seconds)

    real_fire = schedule.fire
    schedule.fire = lambda when: fired.append(when) or real_fire(when)
    schedule.run(stop=lambda: clock[0] > datetime(2025, 8, 6, 7, 0, tzinfo=UTC), now=lambda: clock[0], sleep=sleep)
    assert fired == [datetime(2025, 8, 5, 6, 30, tzinfo=UTC), datetime(2025, 8, 6, 6, 30, tzinfo=UTC)]
    assert schedule.fire(fired[0]) is False  # a second scheduler at the same firing enqueues nothing
    jobs = [fetch_job(FETCH_QUEUE, runtime.redis, j) for j in queue(FETCH_QUEUE, runtime.redis).get_job_ids()]
    assert [j.func_name for j in jobs] == ["workers.tasks.request_daily"] * 2
    assert all(j.kwargs == {"ns": "ser", "source": cfg.workers.daily_source} for j in jobs)
    # and the worker runs what the schedule enqueued: today's DailyRunRequested is recorded
    ModelWorker([queue(FETCH_QUEUE, runtime.redis)], connection=runtime.redis).work(burst=True)
    assert runtime.store("ser").count() == 1


def test_varro_worker_fetch_process_refuses_a_pickled_job(runtime, tmp_path, redis_server):
    import os
    import subprocess
    import sys

    job_id = _enqueued_fetch(runtime)
    marker = tmp_path / "pwned-by-worker"
    runtime.redis.hset(f"rq:job:{job_id}", "data", zlib.compress(_evil(marker)))
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"VARRO_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "varro.cli",
            "worker",
            "fetch",
            "--burst",
            "--ns",
            "ser",
            "--redis-url",
            redis_server.url,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    assert job_id in queue(FETCH_QUEUE, runtime.redis).failed_job_registry.get_job_ids()
