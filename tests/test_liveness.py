"""A model worker killed with -9 mid-job: its job is re-run by itself within the liveness bound,
`status` calls the day stalled meanwhile, and `backfill` resumes it.

Real processes throughout: `python -m varro.cli worker model` subprocesses
against the session's embedded server, killed as a whole process group. The
job is the real fetch job behind a gate (tests/liveness_tasks.py) so the kill
lands mid-job at a known moment. liveness_s is 5 s here (120 s by default).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from liveness_tasks import attempts
from rq import Retry

from jobs.daily import request_day
from varro.config import load_config
from workers.dispatcher import FETCH_QUEUE, GROUP, MODEL_QUEUE, Dispatcher
from workers.liveness import recover_abandoned, stalled_job_ids
from workers.operations import day_state, namespace_status, plan_backfill, run_backfill, stage_grid
from workers.queues import fetch_job, queue
from workers.runtime import Runtime, set_runtime

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NS = "live"
DAY = "2025-08-04"
LIVENESS_S = 5
JOB_ID = "varro_fetch_2025-08-04_held"


def small_config(data_dir: Path):
    return load_config(
        overrides={
            "ns": NS,
            "data_dir": str(data_dir),
            "generation": {
                "max_headlines": 2,
                "profiles": {
                    "default": {"name": "default", "temperature": 0.8, "top_p": 0.95, "top_k": 50, "max_tokens": 24}
                },
            },
            "workers": {"liveness_s": LIVENESS_S, "retries": 2},
        },
        environ={},
    )


@pytest.fixture
def runtime(tmp_path, redis_client):
    rt = Runtime.create(small_config(tmp_path), redis=redis_client)
    set_runtime(rt)
    yield rt
    set_runtime(None)
    rt.models.release()


def wait_for(condition, timeout_s: float, what: str, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"{what} (waited {timeout_s:.0f}s)")


class ModelWorkerProcess:
    """`varro worker model` in its own process group, logging to a file."""

    def __init__(self, url: str, data_dir: Path, log: Path, ns: str = NS, role: str = "model"):
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
            "VARRO_WORKERS__LIVENESS_S": str(LIVENESS_S),
        }
        env.pop("REDIS_URL", None)
        self.log = log
        args = ["--log-level", "INFO", "worker", role, "--redis-url", url, "--data-dir", str(data_dir), "--ns", ns]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "varro.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill_group(self) -> float:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return time.time()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def request_and_hold(rt: Runtime, markers: Path, queue_name: str = MODEL_QUEUE):
    """Request the day, and do what the dispatcher does with it (enqueue its fetch, ack the request),
    with the fetch job behind the gate and the deployment's retry policy and timeout."""
    request_day(rt.context(NS), DAY, trigger="manual", source="sample")
    consumer = Dispatcher(rt.redis, rt.cfg, name="test-dispatcher").consumer(NS)
    (delivery,) = consumer.read(count=10, block_ms=None)
    markers.mkdir()
    queue(queue_name, rt.redis).enqueue_call(
        "liveness_tasks.held_fetch",
        kwargs={
            "ns": NS,
            "date": DAY,
            "cause": delivery.event.event_id,
            "correlation_id": delivery.event.correlation_id,
            "source": "sample",
            "markers": str(markers),
        },
        job_id=JOB_ID,
        timeout=rt.cfg.workers.job_timeout_s,
        retry=Retry(max=rt.cfg.workers.retries),
        meta={"ns": NS, "date": DAY, "stage": "fetch"},
    )
    consumer.ack(delivery.entry_id)
    assert consumer.group == GROUP


def kinds(rt: Runtime) -> list[str]:
    return [type(s.event).__name__ for s in rt.store(NS).read()]


def test_a_killed_model_worker_s_job_is_re_run_by_another_worker_by_itself(runtime, redis_server, tmp_path):
    markers = tmp_path / "markers"
    request_and_hold(runtime, markers)
    first = ModelWorkerProcess(redis_server.url, tmp_path, tmp_path / "worker1.log")
    second = None
    try:
        wait_for(lambda: attempts(markers), 120, "the first worker never started the job")
        # a second worker, already running when the first dies (as under a supervisor)
        second = ModelWorkerProcess(redis_server.url, tmp_path, tmp_path / "worker2.log")
        wait_for(lambda: len(namespace_status(runtime, NS).workers) == 2, 120, "the second worker never registered")
        # the job outlives several liveness periods while its worker beats: nobody takes it over
        time.sleep(3 * LIVENESS_S)
        assert [a for a, _, _ in attempts(markers)] == [1], second.output()
        assert stalled_job_ids(runtime.redis, MODEL_QUEUE) == []
        assert day_state(stage_grid(runtime, NS), runtime.store(NS), DAY) == "running"

        killed_at = first.kill_group()
        wait_for(
            lambda: runtime.store(NS).latest("HeadlinesFetched", DAY),
            30 * LIVENESS_S,
            f"the job was not re-run by itself:\n{second.output()}",
        )
        recorded_after = time.time() - killed_at
    finally:
        first.stop()
        if second is not None:
            second.stop()
    (one, first_pid, _), (two, second_pid, rerun_at) = attempts(markers)
    assert (one, two) == (1, 2)
    assert first_pid == first.pid and second_pid == second.pid
    rerun_after = rerun_at - killed_at
    print(f"\nliveness_s={LIVENESS_S}: re-run {rerun_after:.1f}s after kill -9, recorded {recorded_after:.1f}s after")
    # detected within liveness_s, taken by the idle worker's next maintenance (every liveness_s)
    assert rerun_after < 4 * LIVENESS_S, rerun_after
    assert kinds(runtime) == ["DailyRunRequested", "HeadlinesFetched"]
    job = fetch_job(MODEL_QUEUE, runtime.redis, JOB_ID)
    assert job.get_status().value == "finished"
    assert job.retries_left == runtime.cfg.workers.retries - 1  # the re-run spent one retry
    assert "abandoned job recovered" in second.output()


def test_a_stalled_day_shows_stalled_and_backfill_resumes_it(runtime, redis_server, tmp_path):
    markers = tmp_path / "markers"
    request_and_hold(runtime, markers)
    worker = ModelWorkerProcess(redis_server.url, tmp_path, tmp_path / "worker.log")
    try:
        wait_for(lambda: attempts(markers), 120, "the worker never started the job")
        status = namespace_status(runtime, NS)
        assert status.states[DAY] == "running" and [s for _, s in status.workers] == ["busy"]
        killed_at = worker.kill_group()
    finally:
        worker.stop()
    wait_for(lambda: stalled_job_ids(runtime.redis, MODEL_QUEUE), 6 * LIVENESS_S, "the job never stalled")
    stalled_after = time.time() - killed_at
    print(f"\nliveness_s={LIVENESS_S}: stalled {stalled_after:.1f}s after kill -9")
    assert stalled_after < LIVENESS_S + 3

    status = namespace_status(runtime, NS)
    assert status.grid[DAY]["fetch"] == "stalled"
    assert status.states[DAY] == "stalled"
    # RQ's entry for the dead worker says "busy" until it expires; once silent for liveness_s, status says
    # "lost" (or no longer lists it), never "busy"
    wait_for(
        lambda: all(s.startswith("lost") for _, s in namespace_status(runtime, NS).workers),
        2 * LIVENESS_S,
        "the dead worker is still shown as busy",
    )
    plan = plan_backfill(runtime, NS, [DAY], "missing", None)  # what --dry-run shows
    assert plan.rows == [(DAY, "stalled", True)]
    assert kinds(runtime) == ["DailyRunRequested"]  # looking changed nothing

    run_backfill(runtime, plan, "sample")
    assert [a for a, _, _ in attempts(markers)] == [1, 2]  # the stalled job itself was resumed
    assert kinds(runtime) == ["DailyRunRequested", "HeadlinesFetched", "RolloutsGenerated"]
    assert day_state(stage_grid(runtime, NS), runtime.store(NS), DAY) == "done"


def test_the_dispatcher_loop_re_runs_a_stalled_job_when_no_worker_is_left(runtime, redis_server, tmp_path):
    markers = tmp_path / "markers"
    request_and_hold(runtime, markers)
    worker = ModelWorkerProcess(redis_server.url, tmp_path, tmp_path / "worker.log")
    try:
        wait_for(lambda: attempts(markers), 120, "the worker never started the job")
        killed_at = worker.kill_group()
    finally:
        worker.stop()
    deadline = time.monotonic() + 6 * LIVENESS_S
    model_queue = queue(MODEL_QUEUE, runtime.redis)
    Dispatcher(runtime.redis, runtime.cfg, name="deployment").run(
        [NS], poll_s=0.2, stop=lambda: JOB_ID in model_queue.get_job_ids() or time.monotonic() > deadline
    )
    requeued_after = time.time() - killed_at
    print(f"\nliveness_s={LIVENESS_S}: dispatcher re-enqueued the job {requeued_after:.1f}s after kill -9")
    assert model_queue.get_job_ids() == [JOB_ID], "the dispatcher did not re-enqueue the stalled job"
    assert fetch_job(MODEL_QUEUE, runtime.redis, JOB_ID).retries_left == runtime.cfg.workers.retries - 1
    assert day_state(stage_grid(runtime, NS), runtime.store(NS), DAY) == "running"  # queued again, not stalled


def test_a_worker_killed_mid_generation_leaves_one_event_and_no_partial_artifact(redis_server, redis_client, tmp_path):
    """The real generate job, killed while it generates: the next worker generates the day again, and
    the log and the artifact store hold one RolloutsGenerated and only whole, hash-named files."""
    from events.ids import sha256_hex
    from workers import tasks
    from workers.dispatcher import plan

    ns = "gen"
    cfg = load_config(
        overrides={
            "ns": ns,
            "data_dir": str(tmp_path),
            # long enough to be killed mid-way: 24 headlines x 8 roll-outs x up to 512 tokens (about 10 s)
            "generation": {"max_headlines": 24, "profiles": {"default": {"name": "default", "max_tokens": 512}}},
            "workers": {"liveness_s": LIVENESS_S, "retries": 2},
        },
        environ={},
    )
    rt = Runtime.create(cfg, redis=redis_client)
    set_runtime(rt)
    try:
        request_day(rt.context(ns), DAY, trigger="manual", source="sample")
        request = rt.store(ns).latest("DailyRunRequested", DAY)
        tasks.fetch(ns, DAY, request.event_id, request.correlation_id, source="sample")
        (spec,) = plan(rt.store(ns).latest("HeadlinesFetched", DAY), rt.store(ns))
        assert spec.stage == "generate"
        Dispatcher(rt.redis, rt.cfg, name="test-dispatcher").enqueue(spec)

        first = ModelWorkerProcess(redis_server.url, tmp_path, tmp_path / "worker1.log", ns=ns)
        try:
            wait_for(lambda: '"generating"' in first.log.read_text(), 240, "the first worker never started generating")
            time.sleep(1.0)
            assert rt.store(ns).latest("RolloutsGenerated", DAY) is None, "generation ended before the kill"
            killed_at = first.kill_group()
        finally:
            first.stop()
        second = ModelWorkerProcess(redis_server.url, tmp_path, tmp_path / "worker2.log", ns=ns)
        try:
            wait_for(
                lambda: rt.store(ns).latest("RolloutsGenerated", DAY),
                400,
                f"the day was not generated again:\n{second.output()}",
            )
            done_after = time.time() - killed_at
        finally:
            second.stop()
        print(f"\nliveness_s={LIVENESS_S}: killed mid-generation, day generated {done_after:.1f}s after kill -9")
        assert [type(s.event).__name__ for s in rt.store(ns).read()] == [
            "DailyRunRequested",
            "HeadlinesFetched",
            "RolloutsGenerated",
        ]
        generated = rt.store(ns).latest("RolloutsGenerated", DAY)
        assert rt.artifacts.get(generated.artifact)  # present and hash-verified
        # what the killed writer left is at most a dot-named temporary; every visible file is whole
        for path in (tmp_path / "artifacts").rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                assert sha256_hex(path.read_bytes()) == path.name, f"partial artifact {path}"
        assert "abandoned job recovered" in second.output()
    finally:
        set_runtime(None)
        rt.models.release()


def test_a_stalled_foreign_job_is_failed_never_decoded_or_run(redis_client, tmp_path):
    """A pickled job written into the started registry by someone else: recovery fails it without
    unpickling it (its payload would run code), and status leaves it out."""
    from rq import Queue

    marker = tmp_path / "ran"
    foreign = Queue(MODEL_QUEUE, connection=redis_client)  # RQ's default serializer: pickle
    job = foreign.enqueue_call("pathlib.Path.touch", args=(marker,), job_id="foreign", meta={"ns": NS, "date": DAY})
    job.set_status("started")
    redis_client.lrem(foreign.key, 0, job.id)  # taken off the queue, as a worker does
    redis_client.zadd(queue(MODEL_QUEUE, redis_client).started_job_registry.key, {"foreign:exec": time.time() - 60})

    rt = Runtime(cfg=small_config(tmp_path), redis=redis_client, artifacts=None, models=None)
    assert stage_grid(rt, NS) == {}  # a payload that is not JSON is not Varro's: not shown
    assert recover_abandoned(redis_client, [MODEL_QUEUE]) == ["foreign"]
    assert queue(MODEL_QUEUE, redis_client).failed_job_registry.get_job_ids() == ["foreign"]
    assert queue(MODEL_QUEUE, redis_client).get_job_ids() == []
    assert not marker.exists()


def test_a_fetch_worker_killed_mid_job_stalls_its_job_within_the_bound(runtime, redis_server, tmp_path):
    """The forking fetch worker: its horse monitor beats (RQ's), scored liveness_s ahead like the model worker's."""
    markers = tmp_path / "markers"
    request_and_hold(runtime, markers, FETCH_QUEUE)
    worker = ModelWorkerProcess(redis_server.url, tmp_path, tmp_path / "fetch.log", role="fetch")
    try:
        wait_for(lambda: attempts(markers), 120, "the fetch worker never started the job")
        time.sleep(2 * LIVENESS_S)  # alive and beating: not stalled
        assert stalled_job_ids(runtime.redis, FETCH_QUEUE) == []
        killed_at = worker.kill_group()
    finally:
        worker.stop()
        # RQ's work horse runs in a session of its own, so the group kill leaves it sleeping in
        # held_fetch (and then fetching against a server that is gone): stop it here, by its marker
        for _, pid, _ in attempts(markers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    wait_for(lambda: stalled_job_ids(runtime.redis, FETCH_QUEUE), 6 * LIVENESS_S, "the job never stalled")
    stalled_after = time.time() - killed_at
    print(f"\nliveness_s={LIVENESS_S}: fetch job stalled {stalled_after:.1f}s after kill -9")
    assert stalled_after < LIVENESS_S + 3
    assert namespace_status(runtime, NS).states[DAY] == "stalled"


def train_config(data_dir: Path, ns: str, retries: int):
    """Small enough for a train job of a few seconds on varro-tiny."""
    return load_config(
        overrides={
            "ns": ns,
            "data_dir": str(data_dir),
            "generation": {"max_headlines": 2, "profiles": {"default": {"name": "default", "max_tokens": 24}}},
            "train": {"minibatches": 2, "microbatch_size": 16},
            "workers": {"liveness_s": LIVENESS_S, "retries": retries},
        },
        environ={},
    )


def train_job_due(rt: Runtime, ns: str):
    """Roll out DAY, fetch the day after and rank DAY against it (in this process, as workers would);
    returns the train job's spec that the `Ranked` event makes due."""
    from events.ids import shift_date
    from workers import tasks
    from workers.dispatcher import plan

    store = rt.store(ns)
    for day in (DAY, shift_date(DAY, 1)):
        request_day(rt.context(ns), day, trigger="manual", source="sample")
        for kind in ("DailyRunRequested", "HeadlinesFetched"):
            (spec,) = plan(store.latest(kind, day), store)
            getattr(tasks, spec.stage)(ns, spec.date, spec.cause, spec.correlation_id, **spec.kwargs)
    (spec,) = plan(store.latest("Ranked", DAY), store)
    assert spec.stage == "train"
    return spec


def test_a_train_job_killed_mid_training_mid_save_and_before_publishing_records_one_epoch(
    redis_server, redis_client, tmp_path
):
    """The real train job, its worker's process group killed three times: once the epoch's update is
    computed, once the checkpoint's files are written but not yet renamed into the store, and once
    `EpochTrained` is recorded but the projection links not moved. Each time a standby worker takes
    the job over by itself; the store never shows a partial checkpoint, the rolling checkpoint is
    the old one until the new one is whole, and the day ends with exactly one `EpochTrained`."""
    from liveness_tasks import TRAIN_GATES

    from events.ids import shift_date
    from varro.checkpoints import (
        TrainerState,
        checkpoint_sha256,
        dated_path,
        publish,
        rolling_path,
        save_checkpoint,
        store_dir,
    )

    ns = "train"
    cfg = train_config(tmp_path, ns, retries=len(TRAIN_GATES))
    rt = Runtime.create(cfg, redis=redis_client)
    set_runtime(rt)
    store = rt.store(ns)
    markers = tmp_path / "markers"
    markers.mkdir()
    workers: list[ModelWorkerProcess] = []

    def visible_checkpoints() -> list[Path]:
        """What readers of the store can see: every entry but the hidden temporaries, each whole."""
        found = [p for p in store_dir(tmp_path).iterdir() if not p.name.startswith(".")]
        for path in found:
            assert checkpoint_sha256(path) == path.name, f"partial checkpoint {path}"
        return found

    def start_worker() -> ModelWorkerProcess:
        worker = ModelWorkerProcess(redis_server.url, tmp_path, tmp_path / f"worker{len(workers) + 1}.log", ns=ns)
        workers.append(worker)
        return worker

    try:
        spec = train_job_due(rt, ns)
        # the rolling checkpoint before this training: a real one in the store (the base's weights, saved
        # as a checkpoint), published for the day before, so "old" is a checkpoint and not nothing
        base = rt.models.load(store.latest("RolloutsGenerated", DAY).checkpoint)
        old = save_checkpoint(
            base.model,
            parent_dir=base.path,
            data_dir=tmp_path,
            base_model=base.ref.base_model,
            trainer_state=TrainerState(),
            parent_manifest=base.manifest,
        )
        publish(old, tmp_path, ns, shift_date(DAY, -1))
        old_dir = store_dir(tmp_path).resolve() / old.sha256
        queue(MODEL_QUEUE, rt.redis).enqueue_call(
            "liveness_tasks.gated_train",
            kwargs={
                "ns": ns,
                "date": DAY,
                "cause": spec.cause,
                "correlation_id": spec.correlation_id,
                "markers": str(markers),
            },
            job_id=spec.job_id,
            timeout=cfg.workers.job_timeout_s,
            retry=Retry(max=cfg.workers.retries),
            meta={"ns": ns, "date": DAY, "stage": "train"},
        )
        holder = start_worker()
        took_over_after = []
        for number, gate in enumerate(TRAIN_GATES, start=1):
            wait_for(lambda g=gate: (markers / f"held-{g}").exists(), 240, f"no worker held at {gate}")
            standby = start_worker()  # already running when the holder dies, as under a supervisor
            wait_for(lambda: len(namespace_status(rt, ns).workers) >= 2, 120, "the standby worker never registered")
            killed_at = holder.kill_group()
            holder.stop()

            trained = store.all_for("EpochTrained", DAY)
            assert len(trained) == (1 if gate == "publishing" else 0), gate
            assert rolling_path(tmp_path, ns).resolve() == old_dir, gate  # still the old one
            assert not dated_path(tmp_path, ns, DAY).exists(), gate
            if gate == "saving":  # killed with every file written: the save is still hidden
                assert sorted(p.name[:5] for p in store_dir(tmp_path).iterdir()) == [".tmp-", old.sha256[:5]]
            expected = sorted([old.sha256, *(t.checkpoint.sha256 for t in trained)])
            assert sorted(p.name for p in visible_checkpoints()) == expected, gate
            if gate != TRAIN_GATES[-1]:
                wait_for(
                    lambda a=number + 1: [n for n, _, _ in attempts(markers)][-1:] == [a],
                    30 * LIVENESS_S,
                    f"the standby did not take the job over after the kill at {gate}:\n{standby.output()}",
                )
            else:
                wait_for(
                    lambda: rolling_path(tmp_path, ns).resolve() != old_dir,
                    30 * LIVENESS_S,
                    f"the job was not finished after the kill at {gate}:\n{standby.output()}",
                )
            took_over_after.append(time.time() - killed_at)
            holder = standby
        wait_for(
            lambda: fetch_job(MODEL_QUEUE, rt.redis, spec.job_id).get_status().value == "finished",
            60,
            "the last attempt did not finish",
        )
    finally:
        for worker in workers:
            worker.stop()
        set_runtime(None)
        rt.models.release()
    print(
        f"\nliveness_s={LIVENESS_S}: train job taken over "
        + ", ".join(
            f"{after:.1f}s after kill -9 {gate}" for gate, after in zip(TRAIN_GATES, took_over_after, strict=True)
        )
    )
    (trained,) = store.all_for("EpochTrained", DAY)
    assert [n for n, _, _ in attempts(markers)] == [1, 2, 3, 4]
    assert len({pid for _, pid, _ in attempts(markers)}) == 4  # each attempt in another worker
    assert rolling_path(tmp_path, ns).resolve() == store_dir(tmp_path).resolve() / trained.checkpoint.sha256
    assert dated_path(tmp_path, ns, DAY).resolve() == rolling_path(tmp_path, ns).resolve()
    assert sorted(p.name for p in visible_checkpoints()) == sorted([old.sha256, trained.checkpoint.sha256])
    assert store.verify().ok
    assert fetch_job(MODEL_QUEUE, rt.redis, spec.job_id).retries_left == 0


def test_a_job_dequeued_as_the_server_died_is_put_back_unspent_and_run_once(runtime):
    """RQ dequeues by moving a job id into the queue's intermediate list; the worker then records the
    job as started. If the server dies in between (the move kept, its reply lost), no worker holds the
    job and it has no heartbeat to lapse; RQ's own clean-up would fail it a minute later, spending a
    retry. Recovery puts it back at the head of its queue, retries untouched, and it runs once."""
    from workers.inprocess import drain

    request_day(runtime.context(NS), DAY, trigger="manual", source="sample")
    dispatcher = Dispatcher(runtime.redis, runtime.cfg, name="test-dispatcher")
    dispatcher.step(NS)
    fetch_queue = queue(FETCH_QUEUE, runtime.redis)
    (job_id,) = fetch_queue.get_job_ids()
    runtime.redis.lmove(fetch_queue.key, fetch_queue.intermediate_queue_key)  # the dequeue the server kept
    assert fetch_queue.get_job_ids() == []

    assert recover_abandoned(runtime.redis, [FETCH_QUEUE], undelivered_after_s=0.5) == []  # first sighting
    time.sleep(0.6)
    assert recover_abandoned(runtime.redis, [FETCH_QUEUE], undelivered_after_s=0.5) == [job_id]
    assert fetch_queue.get_job_ids() == [job_id]
    assert runtime.redis.llen(fetch_queue.intermediate_queue_key) == 0
    job = fetch_job(FETCH_QUEUE, runtime.redis, job_id)
    assert job.get_status().value == "queued" and job.retries_left == runtime.cfg.workers.retries

    drain(runtime, dispatcher, [NS])
    assert kinds(runtime) == ["DailyRunRequested", "HeadlinesFetched", "RolloutsGenerated"]

    # a job that did start is left alone, running (in the started registry) or ended: a worker serving
    # several queues leaves its ids in the list, and RQ's own clean-up takes them out
    runtime.redis.rpush(fetch_queue.intermediate_queue_key, job_id)
    for _ in range(2):
        assert recover_abandoned(runtime.redis, [FETCH_QUEUE], undelivered_after_s=0.0) == []
    runtime.redis.zadd(fetch_queue.started_job_registry.key, {f"{job_id}:exec": time.time() + 60})
    assert recover_abandoned(runtime.redis, [FETCH_QUEUE], undelivered_after_s=0.0) == []
    assert runtime.redis.llen(fetch_queue.intermediate_queue_key) == 1
    assert fetch_job(FETCH_QUEUE, runtime.redis, job_id).get_status().value == "finished"


@pytest.mark.slow
def test_a_job_past_its_timeout_is_stopped_retried_then_failed_and_the_worker_goes_on(redis_server, runtime, tmp_path):
    """`workers.job_timeout_s` is a hard limit on the model worker: the job is stopped at it (not left
    to finish), retried under the retry policy, failed with the timeout as its reason when no retry is
    left, and the same worker process then takes the next job."""
    markers = tmp_path / "markers"
    markers.mkdir()
    model_queue = queue(MODEL_QUEUE, runtime.redis)
    model_queue.enqueue_call(
        "liveness_tasks.overrunning",
        kwargs={"markers": str(markers), "seconds": 60.0},
        job_id="varro_overrun",
        timeout=2,
        retry=Retry(max=1),
    )
    model_queue.enqueue_call("liveness_tasks.after_overrun", kwargs={"markers": str(markers)}, job_id="varro_after")
    worker = ModelWorkerProcess(redis_server.url, tmp_path, tmp_path / "worker.log")
    try:
        wait_for(lambda: (markers / "after-overrun").exists(), 120, f"the next job never ran:\n{worker.output()}")
        job = fetch_job(MODEL_QUEUE, runtime.redis, "varro_overrun")
        assert job is not None
        wait_for(lambda: job.get_status().value == "failed", 120, f"the job never failed:\n{worker.output()}")
        assert "JobTimeoutException" in (job.latest_result().exc_string or "")
        started = sorted(p.name for p in markers.glob("overrun-*-pid-*"))
        assert len(started) == 2, started  # the first attempt and its one retry
        assert not list(markers.glob("overrun-*-finished"))  # stopped at the limit, never ran to its end
        pids = {name.rsplit("-", 1)[1] for name in started} | {(markers / "after-overrun").read_text().strip()}
        assert pids == {str(worker.pid)}  # one process throughout: the timeout did not take the worker down
    finally:
        worker.stop()
