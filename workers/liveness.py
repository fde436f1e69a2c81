"""Liveness of jobs: a busy worker's heartbeat, and re-running jobs whose worker died.

RQ keeps each running job in its queue's started registry, scored with the
time its worker's heartbeat expires. RQ's SimpleWorker (the model worker)
sends no heartbeat while a job runs, so it scores a job at start with the
whole job timeout: a model worker killed mid-job left its job "started" for
`job_timeout_s` + 60 s (about an hour) before anything noticed.

Varro's workers score a job `workers.liveness_s` ahead and refresh it every
liveness_s / 4 seconds while the job runs (`JobHeartbeat`, through RQ's own
`maintain_heartbeats`). A job whose score has passed has had no heartbeat for
liveness_s: its worker is gone. Such a job is *stalled*; `recover_abandoned`
hands it to RQ's started-registry cleanup, which re-enqueues it while it has
retries left and moves it to the failed registry (where backfill requeues it)
otherwise. The dispatcher runs the recovery in its loop and every Varro worker
in its maintenance, so a dead worker's job is re-run within about liveness_s
plus one check, with no person involved. A re-run records the same event id,
so the day still gets exactly one event.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import redis as redis_lib
import structlog
from rq.job import JobStatus

from workers.queues import queue
from workers.reconnect import CONNECTION_ERRORS

log = structlog.get_logger("varro.liveness")


class JobHeartbeat:
    """While a job runs in this process, refresh its worker's, execution's and job's heartbeat.

    A daemon thread calls RQ's `worker.maintain_heartbeats(job, execution)`
    every `every_s` seconds; the job's score in the started registry is then
    `worker.get_heartbeat_ttl(job)` (liveness_s) past the last beat. A beat that
    fails (the server restarting) is logged and tried again at the next tick.
    """

    def __init__(self, worker: Any, job: Any, execution: Any, every_s: float):
        self.worker, self.job, self.execution, self.every_s = worker, job, execution, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job.id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.worker.maintain_heartbeats(self.job, self.execution)
            except CONNECTION_ERRORS as exc:
                log.warning("heartbeat not sent", job_id=self.job.id, error=f"{type(exc).__name__}: {exc}")
            except Exception:  # a beat must never take the job down with it
                log.exception("heartbeat failed", job_id=self.job.id)

    def __enter__(self) -> JobHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, self.every_s))


def stalled_job_ids(redis: redis_lib.Redis, name: str) -> list[str]:
    """Ids of queue `name`'s started jobs whose heartbeat has lapsed (their worker is gone)."""
    return [str(job_id) for job_id in queue(name, redis).started_job_registry.get_expired_job_ids()]


# A job id this long in a queue's intermediate list without having started was taken by a
# dequeue whose reply was lost; a live worker starts its job within milliseconds.
UNDELIVERED_AFTER_S = 10.0


def recover_abandoned(
    redis: redis_lib.Redis, names: Iterable[str], *, undelivered_after_s: float = UNDELIVERED_AFTER_S
) -> list[str]:
    """Re-run (or fail, when no retries are left) every stalled job of these queues; returns their ids.

    Also puts back on its queue, unspent, every undelivered job (`requeue_undelivered`).
    Runs under RQ's per-queue maintenance lock, the one its workers clean
    registries under, so two processes recovering at once re-enqueue a job once.
    """
    recovered = []
    for name in names:
        q = queue(name, redis)
        registry = q.started_job_registry
        if redis.exists(q.intermediate_queue_key) and q.acquire_maintenance_lock():
            try:
                recovered += requeue_undelivered(q, undelivered_after_s)
            finally:
                q.release_maintenance_lock()
        if not registry.get_expired_job_ids() or not q.acquire_maintenance_lock():
            continue
        try:
            expired = registry.get_expired_job_ids()
            registry.cleanup()
        except CONNECTION_ERRORS:
            raise  # the caller's loop waits for the server
        except Exception:  # one bad registry entry must not stop the dispatcher or a worker
            log.exception("recovering abandoned jobs failed", queue=name)
            continue
        finally:
            q.release_maintenance_lock()
        for job_id in expired:
            job = q.fetch_job(job_id)
            status = job.get_status(refresh=False) if job is not None else None
            log.warning(
                "abandoned job recovered",
                job_id=job_id,
                queue=name,
                status=str(getattr(status, "value", status)),
                retries_left=getattr(job, "retries_left", None),
            )
            recovered.append(job_id)
    return recovered


def requeue_undelivered(q: Any, after_s: float) -> list[str]:
    """Put back at the head of queue `q` each job a worker dequeued but never received; returns their ids.

    RQ dequeues by moving a job id from the queue into the queue's
    intermediate list, and a worker then records the job as started. When the
    server dies between the two (the move is kept, its reply lost), no worker
    holds the job: it has no heartbeat to lapse, and RQ's own clean-up fails it
    a minute later as "stuck", spending a retry on a job that never ran (with
    `workers.retries = 0` the day stops). A job id found there without a place in
    the started registry, still queued (a job that starts is marked started),
    first seen more than `after_s` ago, is moved back to the front of its
    queue instead, its retries untouched. Call it under
    the queue's maintenance lock. A second start of a job that did begin is
    harmless: its event id repeats.
    """
    intermediate = q.intermediate_queue
    started = set(q.started_job_registry.get_job_ids(cleanup=False))
    requeued = []
    for job_id in intermediate.get_job_ids():
        if job_id in started:
            continue
        if intermediate.set_first_seen(job_id):  # first sighting: a worker may be starting it right now
            continue
        first_seen = intermediate.get_first_seen(job_id)
        if first_seen is None or (datetime.now(UTC) - first_seen).total_seconds() <= after_s:
            continue
        job = q.fetch_job(job_id)
        gone = job is None  # deleted meanwhile: nothing to run
        if job is not None and job.get_status(refresh=False) != JobStatus.QUEUED:
            continue  # it did start (and may have ended): not undelivered; RQ's clean-up has it
        with q.connection.pipeline() as pipe:  # MULTI: the id is in exactly one of the two lists
            pipe.lrem(intermediate.key, 1, job_id)
            if not gone:
                pipe.lpush(q.key, job_id)
            pipe.delete(intermediate.get_first_seen_key(job_id))
            pipe.execute()
        if not gone:
            log.warning("undelivered job requeued", job_id=job_id, queue=q.name)
            requeued.append(job_id)
    return requeued


def worker_state(worker: Any, liveness_s: float, now: datetime | None = None) -> str:
    """RQ's state for a worker, or "lost" with its silence when its heartbeat is older than liveness_s.

    A worker killed with -9 never records its death; its RQ entry says "busy"
    until its key expires. Varro's workers beat at least every liveness_s / 2
    (idle) or liveness_s / 4 (busy), so a longer silence means the process is gone.
    """
    state = str(worker.get_state())
    last = worker.last_heartbeat
    if last is None:
        return state
    if last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    silent = ((now or datetime.now(UTC)) - last).total_seconds()
    return f"lost: {state}, no heartbeat for {silent:.0f}s" if silent > liveness_s else state
