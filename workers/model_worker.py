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
writes, RQ's own lines included, and both read jobs with Varro's JSON
serializer (`workers.queues`): a pickled payload is refused, never unpickled.
"""

from __future__ import annotations

import structlog
from rq import SimpleWorker, Worker

from varro.integrity import PermanentError
from workers.queues import SERIALIZER


class _BoundLogs:
    def __init__(self, *args, **kwargs):
        kwargs["serializer"] = SERIALIZER  # never pickle, whatever a caller passes
        super().__init__(*args, **kwargs)

    def handle_exception(self, job, *exc_info):
        # RQ calls this before it decides on a retry; no retries left means the job fails now
        if isinstance(exc_info[1], PermanentError):
            job.retries_left = 0
        return super().handle_exception(job, *exc_info)

    def perform_job(self, job, queue, *args, **kwargs):
        with structlog.contextvars.bound_contextvars(job_id=job.id, **(job.meta or {})):
            return super().perform_job(job, queue, *args, **kwargs)


class ModelWorker(_BoundLogs, SimpleWorker):
    """Holds the model between jobs; see the module docstring."""


class FetchWorker(_BoundLogs, Worker):
    """Forks a work horse per fetch job."""
