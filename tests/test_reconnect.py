"""Long-running processes outlive a server restart: the server is killed with -9 and started
again (its AOF brings the data back) while a real dispatcher, a real model worker or the
scheduler loop runs; each logs the lost connection and the reconnect, then works on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis as redis_py
import structlog
from rq import Retry

from events.server import EmbeddedServer
from jobs.daily import request_day
from varro.artifacts import ArtifactStore
from varro.config import load_config
from workers.dispatcher import FETCH_QUEUE, MODEL_QUEUE
from workers.queues import queue
from workers.runtime import Runtime
from workers.schedule import DailySchedule

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NS = "rc"
DAYS = ("2025-08-04", "2025-08-05")


@pytest.fixture
def server(tmp_path):
    """A server of the test's own (this test kills it), under the data dir the processes use."""
    srv = EmbeddedServer(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def runtime_on(server: EmbeddedServer, data_dir: Path) -> Runtime:
    cfg = load_config(overrides={"ns": NS, "data_dir": str(data_dir), "workers": {"liveness_s": 5}}, environ={})
    client = redis_py.Redis.from_url(server.url, decode_responses=False)
    return Runtime(cfg=cfg, redis=client, artifacts=ArtifactStore(data_dir), models=None)


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if value := condition():
                return value
        except redis_py.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} (waited {timeout_s:.0f}s)")


def start(data_dir: Path, log: Path, *command: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VARRO_WORKERS__LIVENESS_S": "5", **(env or {})}
    env.pop("REDIS_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "varro.cli", "--log-level", "INFO", *command, "--data-dir", str(data_dir), "--ns", NS],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def restart(server: EmbeddedServer, down_s: float = 3.0) -> float:
    """kill -9 the server, leave it down for `down_s`, start it again; returns the seconds it was down."""
    killed = time.monotonic()
    assert server.kill() is not None
    time.sleep(down_s)
    server.start()
    return time.monotonic() - killed


def fetch_jobs(rt: Runtime, name: str = FETCH_QUEUE) -> list[str]:
    return queue(name, rt.redis).get_job_ids()


def zombies_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_the_dispatcher_process_reconnects_after_a_server_restart(server, tmp_path):
    rt = runtime_on(server, tmp_path)
    log = tmp_path / "dispatcher.log"
    proc = start(tmp_path, log, "dispatcher")
    try:
        request_day(rt.context(NS), DAYS[0], trigger="manual", source="sample")
        wait_for(lambda: len(fetch_jobs(rt)) == 1, 120, "the dispatcher never enqueued the first fetch")
        down_s = restart(server)
        wait_for(lambda: "connection lost" in log.read_text(), 60, "the dispatcher did not notice the restart")
        request_day(rt.context(NS), DAYS[1], trigger="manual", source="sample")
        t0 = time.monotonic()
        wait_for(lambda: len(fetch_jobs(rt)) == 2, 120, f"no fetch after the restart:\n{log.read_text()[-3000:]}")
        print(f"\nserver down {down_s:.1f}s; next request dispatched {time.monotonic() - t0:.1f}s after it")
        assert proc.poll() is None, "the dispatcher died"
    finally:
        stop(proc)
    text = log.read_text()
    assert "connection lost" in text and "reconnected" in text, text[-3000:]
    dates = sorted(queue(FETCH_QUEUE, rt.redis).fetch_job(j).meta["date"] for j in fetch_jobs(rt))
    assert dates == list(DAYS)


def test_a_model_worker_process_reconnects_and_runs_the_next_job(server, tmp_path):
    rt = runtime_on(server, tmp_path)
    log = tmp_path / "worker.log"
    proc = start(tmp_path, log, "worker", "model")
    try:
        wait_for(lambda: "Listening on" in log.read_text(), 120, "the worker never started")
        restart(server)
        # the job is enqueued only after the restart: only a worker that came back can run it
        request_day(rt.context(NS), DAYS[0], trigger="manual", source="sample")
        queue(MODEL_QUEUE, rt.redis).enqueue_call(
            "workers.tasks.fetch",
            kwargs={"ns": NS, "date": DAYS[0], "cause": "test", "correlation_id": "test", "source": "sample"},
            meta={"ns": NS, "date": DAYS[0], "stage": "fetch"},
        )
        wait_for(
            lambda: rt.store(NS).latest("HeadlinesFetched", DAYS[0]),
            120,
            f"the worker did not run a job after the restart:\n{log.read_text()[-3000:]}",
        )
        assert proc.poll() is None, "the worker died"
        # RQ's scheduler child died with the connection; the worker reaps and restarts it
        wait_for(lambda: not zombies_of(proc.pid), 30, "the worker left a zombie child")
    finally:
        stop(proc)
    assert "reconnected" in log.read_text(), log.read_text()[-3000:]


def test_a_connection_lost_as_a_job_ends_is_waited_out_and_the_job_re_run(server, tmp_path):
    """The server dies under a running job: RQ's loop cannot record the job's end and quits;
    the worker waits for the server, works on, and re-runs the job once its heartbeat lapses."""
    from liveness_tasks import attempts

    rt = runtime_on(server, tmp_path)
    markers = tmp_path / "markers"
    markers.mkdir()
    log = tmp_path / "worker.log"
    env_path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    proc = start(tmp_path, log, "worker", "model", env={"PYTHONPATH": env_path})
    try:
        job = queue(MODEL_QUEUE, rt.redis).enqueue_call(
            "liveness_tasks.kill_server_then_finish",
            kwargs={"data_dir": str(tmp_path), "markers": str(markers)},
            timeout=3600,
            retry=Retry(max=2),
        )
        wait_for(
            lambda: job.get_status(refresh=True).value == "finished",
            120,
            f"the job was not re-run after the restart:\n{log.read_text()[-3000:]}",
        )
        assert proc.poll() is None, "the worker died"
    finally:
        stop(proc)
    assert [(a, pid) for a, pid, _ in attempts(markers)] == [(1, proc.pid), (2, proc.pid)]
    text = log.read_text()
    assert "connection lost" in text and "reconnected" in text, text[-3000:]


def test_the_schedule_fires_once_the_server_is_back(server, tmp_path):
    rt = runtime_on(server, tmp_path)
    schedule = DailySchedule(rt.redis, rt.cfg)
    due = schedule.next_time(datetime(2025, 8, 4, tzinfo=UTC))
    assert schedule.next_time(due - timedelta(seconds=1)) == due
    server.kill()
    threading.Timer(2.0, server.start).start()

    def fired() -> bool:
        try:
            return bool(fetch_jobs(rt))
        except redis_py.ConnectionError:
            return False

    clock = iter([due - timedelta(seconds=1)])  # the loop starts just before the firing, then it is due

    with structlog.testing.capture_logs() as logs:
        schedule.run(stop=fired, now=lambda: next(clock, due), max_sleep_s=0.1)
    assert fetch_jobs(rt) == [schedule.job_id(due)]
    events = [(e["event"], e.get("process")) for e in logs]
    assert ("connection lost", "scheduler") in events and ("reconnected", "scheduler") in events
