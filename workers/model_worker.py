"""Worker classes.

`ModelWorker` runs generate/rank/train jobs in its own process (RQ's
SimpleWorker: no fork per job), so the checkpoint loaded by the process
runtime stays in memory from one job to the next. Its jobs always carry a
finite timeout: a SimpleWorker sends no heartbeat while a job runs, and one
with an infinite timeout is declared abandoned after about seven minutes.

`FetchWorker` is RQ's ordinary forking worker: fetching is light, and a feed
that crashes its parser takes down only the work horse. Its parent process
never imports mlx, so nothing accelerator-related is ever forked.

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

from types import TracebackType
from typing import Any

import structlog
from rq import Queue, SimpleWorker, Worker
from rq.executions import Execution
from rq.job import Job
from rq.worker import BaseWorker

from events.errors import PermanentError
from workers.queues import SERIALIZER


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


class _BoundLogs(BaseWorker):
    """What both worker classes add to RQ's: JSON-only payloads, fail-fast on permanent errors, bound logs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["serializer"] = SERIALIZER  # never pickle, whatever a caller passes
        # RQ pushes these in order at the end of its __init__: the fail-fast handler comes after a caller's own
        given = kwargs.get("exception_handlers") or []
        handlers = list(given) if isinstance(given, list | tuple) else [given]
        kwargs["exception_handlers"] = [*handlers, fail_fast_on_permanent]
        super().__init__(*args, **kwargs)

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        with structlog.contextvars.bound_contextvars(job_id=job.id, **(job.meta or {})):
            return super().perform_job(job, queue, execution)


class ModelWorker(_BoundLogs, SimpleWorker):
    """Holds the model between jobs; see the module docstring."""


class FetchWorker(_BoundLogs, Worker):
    """Forks a work horse per fetch job."""
