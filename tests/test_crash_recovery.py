"""The dispatcher, then the server, killed with -9 in the middle of real work: nothing acknowledged is
lost, nothing runs twice, and the run finishes by itself.

Real processes throughout (`varro dispatcher`, `varro worker fetch|model`, and
tests/crashing_dispatcher.py, the dispatcher loop holding at its first ack)
against an embedded server of the test's own, with liveness_s = 5.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_py
from test_reconnect import ROOT, restart, start, stop, wait_for

from events.ids import shift_date
from events.server import EmbeddedServer
from jobs.daily import request_day
from varro.artifacts import ArtifactStore
from varro.config import load_config
from workers.dispatcher import FETCH_QUEUE, GROUP, MODEL_QUEUE
from workers.queues import queue
from workers.runtime import Runtime

pytestmark = pytest.mark.slow

NS = "rc"
DAY = "2025-08-04"
SMALL = """\
[generation]
max_headlines = 2
[generation.profiles.default]
name = "default"
max_tokens = 24
[train]
minibatches = 2
microbatch_size = 16
"""


@pytest.fixture
def server(tmp_path):
    """A server of the test's own (the multi-day test kills it), under the data dir the processes use."""
    srv = EmbeddedServer(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def small_env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "varro.toml"
    config.write_text(SMALL)
    return {"VARRO_CONFIG": str(config), "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}


def runtime_on(server: EmbeddedServer, data_dir: Path) -> Runtime:
    """The test's view of the namespace, with the small config the days record (their jobs run under it)."""
    small_env(data_dir)
    cfg = load_config(data_dir / "varro.toml", overrides={"ns": NS, "data_dir": str(data_dir)}, environ={})
    client = redis_py.Redis.from_url(server.url, decode_responses=False)
    return Runtime(cfg=cfg, redis=client, artifacts=ArtifactStore(data_dir), models=None)


def crashing_dispatcher(tmp_path: Path, markers: Path) -> subprocess.Popen:
    env = {**os.environ, **small_env(tmp_path), "VARRO_WORKERS__LIVENESS_S": "5"}
    env.pop("REDIS_URL", None)
    markers.mkdir()
    return subprocess.Popen(
        [sys.executable, "-m", "crashing_dispatcher", str(tmp_path), NS, str(markers)],
        cwd=ROOT,
        env=env,
        stdout=(tmp_path / "crashing.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen) -> float:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return time.monotonic()


def counts(rt) -> dict[str, int]:
    out: dict[str, int] = {}
    for stored in rt.store(NS).read():
        name = f"{type(stored.event).__name__} {stored.event.date}"
        out[name] = out.get(name, 0) + 1
    return out


def enqueued(log: Path, stage: str) -> int:
    """How many jobs of `stage` the dispatcher logging to `log` enqueued (its log lines are JSON)."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return sum(1 for line in lines if line.get("event") == "enqueued" and line.get("stage") == stage)


def pending(rt) -> int:
    """Entries of the namespace read by a dispatcher and not acked."""
    return int(rt.redis.xpending(rt.store(NS).stream, GROUP)["pending"])


def test_an_entry_a_dead_dispatcher_held_is_taken_over_after_liveness_s(redis_client, tmp_path):
    """In process: the next dispatcher takes the entry over once it has been idle for liveness_s (5 s
    here), not after a fixed minute."""
    from workers.dispatcher import Dispatcher

    cfg = load_config(overrides={"ns": NS, "data_dir": str(tmp_path), "workers": {"liveness_s": 5}}, environ={})
    rt = Runtime(cfg=cfg, redis=redis_client, artifacts=ArtifactStore(tmp_path), models=None)
    request_day(rt.context(NS), DAY, trigger="manual", source="sample")
    (_held,) = Dispatcher(redis_client, cfg, name="dead").consumer(NS).read(count=10, block_ms=None)
    successor = Dispatcher(redis_client, cfg, name="next")
    assert successor.step(NS) == 0 and pending(rt) == 1  # not yet idle for liveness_s
    time.sleep(cfg.workers.liveness_s + 0.5)
    assert successor.step(NS) == 1 and pending(rt) == 0
    assert queue(FETCH_QUEUE, redis_client).get_job_ids()  # the request was planned by the successor


def test_a_dispatcher_killed_between_enqueue_and_ack_is_taken_over_without_a_second_job(server, tmp_path):
    rt = runtime_on(server, tmp_path)
    markers = tmp_path / "markers"
    crashing = crashing_dispatcher(tmp_path, markers)
    procs: list[subprocess.Popen] = []
    try:
        request = request_day(rt.context(NS), DAY, trigger="manual", source="sample").event
        wait_for(lambda: (markers / "held-ack").exists(), 120, "the dispatcher never reached its ack")
        (fetch_id,) = queue(FETCH_QUEUE, rt.redis).get_job_ids()  # enqueued, not acked
        assert pending(rt) == 1
        killed_at = kill_group(crashing)

        log = tmp_path / "dispatcher.log"
        procs = [start(tmp_path, log, "dispatcher", env=small_env(tmp_path))]
        procs.append(start(tmp_path, tmp_path / "fetch.log", "worker", "fetch", env=small_env(tmp_path)))
        wait_for(lambda: queue(MODEL_QUEUE, rt.redis).get_job_ids(), 120, f"no generate job:\n{log.read_text()}")
        # taken over within liveness_s of its delivery (a fixed minute before), plus the start-up
        wait_for(lambda: pending(rt) == 0, 45, f"the entry was not taken over:\n{log.read_text()}")
        taken_over_s = time.monotonic() - killed_at
    finally:
        stop(crashing)
        for proc in procs:
            stop(proc)
    print(f"\nliveness_s=5: killed between enqueue and ack; the next stage was enqueued {taken_over_s:.1f}s later")
    assert "reclaimed stale entry" in log.read_text()
    assert enqueued(log, "fetch") == 0  # the request was planned again, and RQ refused the known job id
    assert enqueued(log, "generate") == 1
    assert queue(FETCH_QUEUE, rt.redis).fetch_job(fetch_id).get_status().value == "finished"
    assert counts(rt) == {f"DailyRunRequested {DAY}": 1, f"HeadlinesFetched {DAY}": 1}
    assert rt.store(NS).latest("HeadlinesFetched", DAY).causation_id == request.event_id


def test_a_dispatcher_killed_after_the_effect_before_ack_lets_the_day_finish_once(server, tmp_path):
    rt = runtime_on(server, tmp_path)
    markers = tmp_path / "markers"
    crashing = crashing_dispatcher(tmp_path, markers)
    procs = [start(tmp_path, tmp_path / "fetch.log", "worker", "fetch", env=small_env(tmp_path))]
    try:
        request_day(rt.context(NS), DAY, trigger="manual", source="sample")
        wait_for(lambda: (markers / "held-ack").exists(), 120, "the dispatcher never reached its ack")
        # the effect: the enqueued fetch runs and records its event while the request is still unacked
        wait_for(lambda: rt.store(NS).latest("HeadlinesFetched", DAY), 120, "the fetch job never ran")
        killed_at = kill_group(crashing)

        log = tmp_path / "dispatcher.log"
        procs.append(start(tmp_path, log, "dispatcher", env=small_env(tmp_path)))
        procs.append(start(tmp_path, tmp_path / "model.log", "worker", "model", env=small_env(tmp_path)))
        wait_for(
            lambda: rt.store(NS).latest("RolloutsGenerated", DAY), 240, f"the day never finished:\n{log.read_text()}"
        )
        finished_s = time.monotonic() - killed_at
        wait_for(lambda: pending(rt) == 0, 60, "entries left")
    finally:
        stop(crashing)
        for proc in procs:
            stop(proc)
    print(f"\nliveness_s=5: killed after the effect, before ack; the day finished {finished_s:.1f}s later")
    assert "reclaimed stale entry" in log.read_text()
    assert enqueued(log, "fetch") == 0 and enqueued(log, "generate") == 1
    assert counts(rt) == {f"DailyRunRequested {DAY}": 1, f"HeadlinesFetched {DAY}": 1, f"RolloutsGenerated {DAY}": 1}


def test_the_server_killed_and_restarted_mid_run_loses_nothing_and_every_process_works_on(server, tmp_path):
    """Three days through a real dispatcher, fetch worker and model worker; the server is killed with -9
    once the first day is trained (the second day's generation is under way) and started again 2 s later."""
    rt = runtime_on(server, tmp_path)
    days = [DAY, shift_date(DAY, 1), shift_date(DAY, 2)]
    env = small_env(tmp_path)
    logs = {name: tmp_path / f"{name}.log" for name in ("dispatcher", "fetch", "model")}
    procs = {
        "dispatcher": start(tmp_path, logs["dispatcher"], "dispatcher", env=env),
        "fetch": start(tmp_path, logs["fetch"], "worker", "fetch", env=env),
        "model": start(tmp_path, logs["model"], "worker", "model", env=env),
    }
    try:
        for day in days:
            request_day(rt.context(NS), day, trigger="manual", source="sample")
        wait_for(lambda: rt.store(NS).latest("EpochTrained", days[0]), 300, f"day 1 never trained:\n{logs}")
        before = {stored.event.event_id for stored in rt.store(NS).read()}
        down_s = restart(server, down_s=2.0)
        restarted = time.monotonic()
        wait_for(
            lambda: rt.store(NS).latest("RolloutsGenerated", days[2]),
            300,
            "the run did not finish after the restart:\n" + logs["model"].read_text()[-3000:],
        )
        finished_s = time.monotonic() - restarted
        wait_for(lambda: pending(rt) == 0, 60, "entries left unacked")
        alive = {name: proc.poll() is None for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            stop(proc)
    print(f"\nserver down {down_s:.1f}s after day 1 was trained; the run finished {finished_s:.1f}s after the restart")
    after = {stored.event.event_id for stored in rt.store(NS).read()}
    assert before <= after, "an event recorded before the kill is gone"
    assert alive == {"dispatcher": True, "fetch": True, "model": True}
    for name, log in logs.items():
        text = log.read_text()
        assert "reconnected" in text, f"{name}:\n{text[-3000:]}"  # each waited for the server, then worked on
    assert counts(rt) == {
        **{
            f"{kind} {day}": 1
            for kind in ("DailyRunRequested", "HeadlinesFetched", "RolloutsGenerated")
            for day in days
        },
        **{f"{kind} {day}": 1 for kind in ("Ranked", "EpochTrained") for day in days[:2]},
    }
    assert rt.store(NS).verify().ok
