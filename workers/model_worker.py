"""Worker classes.

`ModelWorker` runs generate/rank/train jobs in its own process (RQ's
SimpleWorker: no fork per job), so the checkpoint loaded by the process
runtime stays in memory from one job to the next. Its jobs still carry a
finite timeout (`workers.job_timeout_s`), the death penalty of a job that
hangs; a job whose worker died is found by its lapsed heartbeat instead.

`FetchWorker` is RQ's ordinary forking worker: fetching is light, and a feed
that crashes its parser takes down only the work horse. Its parent process
never imports mlx, so nothing accelerator-related is ever forked.

Liveness (`workers.liveness`): both keep a running job's heartbeat
`workers.liveness_s` ahead, refreshed every liveness_s / 4 seconds (the model
worker from a heartbeat thread, the fetch worker from RQ's horse monitor), and
clean the registries every liveness_s, so a job whose worker was killed is
re-run within about liveness_s instead of after `job_timeout_s`. Both also
outlive a server restart: the work loop logs the lost connection, waits for the
server with backoff (`workers.reconnect`) and starts working again.

A job that fails with a `varro.integrity.PermanentError` (bytes on disk that
are not the recorded ones) fails at once: another attempt would read the same
bytes, so its retries are not spent.

Both bind the job id and the job's (ns, date, stage) to every log line the job
writes, RQ's own lines included. Both read jobs with Varro's JSON serializer
(`workers.queues`): a pickled payload is refused, never unpickled. And both
fail a job at once, with its reason, when it raises a `PermanentError` (a
missing predecessor, bad input, a corrupted file): retrying those only
repeats the same error.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

import structlog
from rq import Queue, SimpleWorker, Worker
from rq.executions import Execution
from rq.job import Job
from rq.worker import BaseWorker

from events.errors import PermanentError
from workers.liveness import JobHeartbeat, recover_abandoned
from workers.queues import SERIALIZER
from workers.reconnect import CONNECTION_ERRORS, wait_for_server

log = structlog.get_logger("varro.worker")


def fail_fast_on_permanent(
    job: Job, exc_type: type[BaseException], exc_value: BaseException, traceback: TracebackType | None
) -> bool:
    """RQ exception handler: a permanent error leaves the job no retries; other handlers still run."""
    if isinstance(exc_value, PermanentError) and job.retries_left:
        structlog.get_logger("varro.worker").warning(
            "permanent failure, not retried", job_id=job.id, error=f"{exc_type.__name__}: {exc_value}"
        )
        job.retries_left = 0
    return True


def _configured_liveness_s() -> int:
    from workers.runtime import current_config

    return current_config().workers.liveness_s


class _BoundLogs(BaseWorker):
    """What both worker classes add to RQ's: JSON-only payloads, fail-fast on permanent errors,
    bound logs, a heartbeat while a job runs, and reconnecting after a server restart."""

    def __init__(self, *args: Any, liveness_s: int | None = None, **kwargs: Any) -> None:
        kwargs["serializer"] = SERIALIZER  # never pickle, whatever a caller passes
        self.liveness_s = int(liveness_s or _configured_liveness_s())
        kwargs.setdefault("job_monitoring_interval", max(1, self.liveness_s // 4))
        kwargs.setdefault("maintenance_interval", self.liveness_s)
        # RQ pushes these in order at the end of its __init__: the fail-fast handler comes after a caller's own
        given = kwargs.get("exception_handlers") or []
        handlers = list(given) if isinstance(given, list | tuple) else [given]
        kwargs["exception_handlers"] = [*handlers, fail_fast_on_permanent]
        super().__init__(*args, **kwargs)
        self._connection_lost: BaseException | None = None

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        with structlog.contextvars.bound_contextvars(job_id=job.id, **(job.meta or {})):
            return super().perform_job(job, queue, execution)

    # ---------------------------------------------------------------- liveness

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        """A running job stays in the started registry liveness_s past its worker's last beat."""
        return self.liveness_s

    def clean_registries(self) -> None:
        """RQ's registry maintenance, after re-running (and logging) this worker's queues' stalled jobs."""
        recover_abandoned(self.connection, self.queue_names())
        BaseWorker.clean_registries(self)

    @property
    def dequeue_timeout(self) -> int:
        """An idle worker wakes (heartbeat, maintenance) at least every liveness_s / 2."""
        return max(1, min(self.worker_ttl - 15, self.liveness_s // 2))

    # ---------------------------------------------------------------- reconnecting

    def work(self, burst: bool = False, *args: Any, **kwargs: Any) -> bool:
        """RQ's work loop, started again after the server comes back whenever it ended on a lost connection.

        RQ's loop retries a lost connection only while it blocks for a job;
        anywhere else (between jobs, during maintenance, at teardown) it quits.
        A burst worker (in-process runs) still ends, as before.
        """
        while True:
            self._connection_lost = None
            try:
                worked = super().work(burst, *args, **kwargs)
            except CONNECTION_ERRORS as exc:  # teardown could not record the worker's death
                self._connection_lost = exc
                worked = False
            lost = self._connection_lost
            if lost is None or burst or self._stop_requested:
                return worked
            wait_for_server(self.connection, log, lost, process=f"worker {self.name}")
            self._forget_previous_life()

    def _forget_previous_life(self) -> None:
        """Record the death the lost connection prevented, so the next `work()` can register again."""
        steps: tuple[Callable[[], object], ...] = (self.register_death, self.unsubscribe)
        for step in steps:
            try:
                step()
            except Exception as exc:  # best effort: the next birth overwrites the worker's hash
                log.warning("cleanup after reconnect failed", step=step.__name__, error=str(exc))
        self._stop_requested = False

    def _watch(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except CONNECTION_ERRORS as exc:
            self._connection_lost = exc
            raise

    def check_for_suspension(self, *args: Any, **kwargs: Any) -> Any:
        return self._watch(super().check_for_suspension, *args, **kwargs)

    def run_maintenance_tasks(self, *args: Any, **kwargs: Any) -> Any:
        return self._watch(super().run_maintenance_tasks, *args, **kwargs)

    def dequeue_job_and_maintain_ttl(self, *args: Any, **kwargs: Any) -> Any:
        return self._watch(super().dequeue_job_and_maintain_ttl, *args, **kwargs)

    def execute_job(self, *args: Any, **kwargs: Any) -> Any:
        return self._watch(super().execute_job, *args, **kwargs)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat; the first one sent after a lost connection says the worker is back.

        RQ's loop retries a lost connection itself while it waits for a job;
        this is where that retry is seen to have worked. With a pipeline (the
        heartbeat thread's beats) nothing is sent here, so nothing is learnt.
        """
        self._watch(super().heartbeat, timeout, pipeline=pipeline)
        if pipeline is None and self._connection_lost is not None:
            self._connection_lost = None
            log.warning("reconnected", process=f"worker {self.name}")


class ModelWorker(_BoundLogs, SimpleWorker):
    """Holds the model between jobs; see the module docstring."""

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        # RQ's SimpleWorker runs the job in this thread and never beats meanwhile: a thread does
        with JobHeartbeat(self, job, execution, every_s=self.job_monitoring_interval):
            return super().perform_job(job, queue, execution)


class FetchWorker(_BoundLogs, Worker):
    """Forks a work horse per fetch job."""
