"""Every RQ object Varro makes, built with one safe serializer.

RQ's default serializer is pickle, and unpickling runs code: anyone who can
write one job hash into a shared Redis would own every worker and every
`varro status`. Varro's jobs take only plain values (namespace, date, ids) and
return an event id, so JSON carries them all; a job whose data or result is
not JSON (a pickle written into Redis) fails to decode and is refused instead
of run. Build queues, workers and registries only through here.
"""

from __future__ import annotations

import redis as redis_lib
from rq import Queue
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

SERIALIZER = JSONSerializer


def queue(name: str, redis: redis_lib.Redis) -> Queue:
    """The RQ queue `name`, reading and writing jobs as JSON."""
    return Queue(name, connection=redis, serializer=SERIALIZER)


def fetch_job(name: str, redis: redis_lib.Redis, job_id: str) -> Job | None:
    """A job of queue `name` whose payload is Varro's own (JSON), else None.

    None covers a job that expired and one whose data is not JSON: a payload
    that is not ours is never decoded as anything else, only left out.
    """
    try:
        job = queue(name, redis).fetch_job(job_id)
        if job is not None:
            _ = job.func_name  # decodes the payload now: a foreign one raises here, not later
        return job
    except (DeserializationError, NoSuchJobError, UnicodeDecodeError, ValueError):
        return None


def last_error(job: Job) -> str:
    """The last line of a failed job's error; a result that is not JSON is reported, never decoded otherwise."""
    try:
        result = job.latest_result()
    except (DeserializationError, UnicodeDecodeError, ValueError):
        return "its recorded result is not Varro's (not JSON): refused to decode it"
    lines = (result.exc_string or "").strip().splitlines()[-1:] if result else []
    return lines[0] if lines else "unknown error"
