"""The same work delivered twice has one effect: one job for an event handled by two dispatchers,
one event, one checkpoint and no failed job when two workers run the same train job at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_liveness import DAY, ModelWorkerProcess, train_config, train_job_due, wait_for

from jobs.daily import request_day
from varro.checkpoints import checkpoint_sha256, rolling_path, store_dir
from workers.dispatcher import FETCH_QUEUE, MODEL_QUEUE, Dispatcher, plan
from workers.queues import fetch_job, queue
from workers.runtime import Runtime, set_runtime

pytestmark = pytest.mark.slow


def test_one_event_handled_by_two_dispatchers_makes_one_job(redis_client, tmp_path):
    """A slow dispatcher's entry is taken over by another (min_idle_ms=0) while the first still handles
    it: both plan and enqueue, and RQ keeps one job, queued or already finished."""
    cfg = train_config(tmp_path, "dup", retries=1)
    rt = Runtime.create(cfg, redis=redis_client)
    request_day(rt.context("dup"), DAY, trigger="manual", source="sample")
    slow, other = (Dispatcher(redis_client, cfg, name=n, min_idle_ms=0) for n in ("slow", "other"))
    (first,) = slow.consumer("dup").read(count=10, block_ms=None)
    (again,) = other.consumer("dup").read(count=10, block_ms=None)  # the same entry, delivered again
    assert (first.entry_id, again.entry_id, again.deliveries) == (first.entry_id, first.entry_id, 2)
    enqueued = [slow.enqueue(spec) for spec in plan(first.event, rt.store("dup"))]
    enqueued += [other.enqueue(spec) for spec in plan(again.event, rt.store("dup"))]
    assert enqueued == [True, False]
    assert len(queue(FETCH_QUEUE, redis_client).get_job_ids()) == 1
    slow.consumer("dup").ack(first.entry_id)
    other.consumer("dup").ack(again.entry_id)
    assert slow.consumer("dup").pending() == 0
    rt.models.release()


def test_two_workers_running_the_same_train_job_at_once_record_one_epoch_and_both_succeed(
    redis_server, redis_client, tmp_path
):
    """Two copies of one train job (as when a job is re-run while its first worker still lives) in two
    real model workers, meeting at the checkpoint's rename and at the append (tests/liveness_tasks.py):
    one `EpochTrained`, one stored checkpoint, and both jobs finish."""
    ns = "dup"
    cfg = train_config(tmp_path, ns, retries=0)
    rt = Runtime.create(cfg, redis=redis_client)
    set_runtime(rt)
    markers = tmp_path / "markers"
    markers.mkdir()
    workers: list[ModelWorkerProcess] = []
    try:
        spec = train_job_due(rt, ns)
        ids = [f"{spec.job_id}_{copy}" for copy in ("a", "b")]
        for job_id, copy in zip(ids, ("a", "b"), strict=True):
            queue(MODEL_QUEUE, rt.redis).enqueue_call(
                "liveness_tasks.paired_train",
                kwargs={
                    "ns": ns,
                    "date": DAY,
                    "cause": spec.cause,
                    "correlation_id": spec.correlation_id,
                    "markers": str(markers),
                    "copy": copy,
                },
                job_id=job_id,
                timeout=cfg.workers.job_timeout_s,
                meta={"ns": ns, "date": DAY, "stage": "train"},
            )
        workers = [ModelWorkerProcess(redis_server.url, tmp_path, tmp_path / f"w{n}.log", ns=ns) for n in (1, 2)]
        done = ("finished", "failed")
        wait_for(
            lambda: all(fetch_job(MODEL_QUEUE, rt.redis, j).get_status().value in done for j in ids),
            240,
            "the two copies did not end:\n" + "\n".join(w.output() for w in workers),
        )
        statuses = [fetch_job(MODEL_QUEUE, rt.redis, j).get_status().value for j in ids]
        results = [fetch_job(MODEL_QUEUE, rt.redis, j).return_value() for j in ids]
    finally:
        for worker in workers:
            worker.stop()
        set_runtime(None)
        rt.models.release()
    logs = "\n".join(w.output() for w in workers)
    assert sorted(p.name for p in markers.iterdir()) == ["append-a", "append-b", "rename-a", "rename-b"]
    assert len({Path(p).read_text() for p in markers.iterdir()}) == 2  # in two processes
    assert statuses == ["finished", "finished"], logs
    (trained,) = rt.store(ns).all_for("EpochTrained", DAY)
    assert results == [trained.event_id, trained.event_id]
    visible = [p for p in store_dir(tmp_path).iterdir() if not p.name.startswith(".")]
    assert [p.name for p in visible] == [trained.checkpoint.sha256]
    assert checkpoint_sha256(visible[0]) == trained.checkpoint.sha256
    assert not [p for p in store_dir(tmp_path).iterdir() if p.name.startswith(".tmp-")]  # the loser cleaned up
    assert rolling_path(tmp_path, ns).resolve() == visible[0].resolve()
