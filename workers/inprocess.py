"""The whole loop in one process: dispatcher plus burst workers, day after day.

`varro run`, `varro replay` and `varro backfill` use this. It is the same path
as a deployment (events -> dispatcher -> RQ queues -> worker -> job -> event),
only with the dispatcher and an RQ SimpleWorker taking turns in one process
until nothing is left to do, so the model stays loaded across all the days.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from events.errors import VarroError
from events.ids import shift_date
from events.schema import HeadlineSource
from events.store import EventStore
from jobs.daily import request_day
from varro.config import VarroConfig
from workers.dispatcher import (
    FETCH_QUEUE,
    MODEL_QUEUE,
    Dispatcher,
    missing_stages,
    refuse_if_dispatched,
    resume,
)
from workers.model_worker import ModelWorker
from workers.queues import fetch_job, last_error, queue
from workers.runtime import Runtime, set_runtime


class RunFailed(VarroError, RuntimeError):
    """A stage of a day failed after its retries; the message names the job and error."""


@dataclass(frozen=True)
class FailedJob:
    job_id: str
    stage: str
    date: str
    error: str


def failed_jobs(rt: Runtime, ns: str) -> list[FailedJob]:
    """The namespace's jobs in RQ's failed registries, with their last error line."""
    out = []
    for name in (FETCH_QUEUE, MODEL_QUEUE):
        for job_id in queue(name, rt.redis).failed_job_registry.get_job_ids():
            job = fetch_job(name, rt.redis, job_id)
            if job is None or (job.meta or {}).get("ns") != ns:
                continue
            out.append(FailedJob(job_id, job.meta.get("stage", ""), job.meta.get("date", ""), last_error(job)))
    return out


def requeue_failed(rt: Runtime, ns: str, dates: list[str]) -> int:
    """Put the namespace's failed jobs for these days back on their queues."""
    count = 0
    for name in (FETCH_QUEUE, MODEL_QUEUE):
        registry = queue(name, rt.redis).failed_job_registry
        for job_id in registry.get_job_ids():
            job = fetch_job(name, rt.redis, job_id)
            if job is not None and (job.meta or {}).get("ns") == ns and job.meta.get("date") in dates:
                registry.requeue(job_id)
                count += 1
    return count


def drain(rt: Runtime, dispatcher: Dispatcher, namespaces: list[str]) -> None:
    """Alternate dispatching and working until no event or job is left."""
    queues = [queue(name, rt.redis) for name in (FETCH_QUEUE, MODEL_QUEUE)]
    while True:
        handled = sum(dispatcher.step(ns) for ns in namespaces)
        worked = False
        if any(q.count for q in queues):
            worker = ModelWorker(queues, connection=rt.redis)
            worked = worker.work(burst=True, logging_level="WARNING", with_scheduler=False)
        if not handled and not worked:
            return


def run_days(
    rt: Runtime,
    ns: str,
    dates: list[str],
    *,
    source: HeadlineSource | str | Callable[[str], HeadlineSource | str],
    seed: int | Callable[[str], int] | None = None,
    trigger: str = "run",
    config_for: Callable[[str], VarroConfig] | None = None,
    on_day: Callable[[str], None] | None = None,
) -> None:
    """Request each day in order and run its chain to completion before the next.

    A day already requested whose chain stopped short (a failed or lost job) is
    resumed where it stopped rather than requested again.

    `config_for(date)` gives the config a day is requested with (a replay passes
    the source namespace's recorded one); by default the runtime's own.

    A deployment's dispatcher consuming the namespace would take the run's
    events and do its work: that is refused (`DeploymentRunning`) before
    anything is recorded, and a day that stops short while one appeared says so.
    """
    set_runtime(rt)
    dispatcher = Dispatcher(rt.redis, rt.cfg, name=f"inprocess-{ns}")
    refuse_if_dispatched(rt.redis, ns, me=dispatcher.name)
    for date in dates:
        ctx = rt.context(ns)
        if config_for is not None:
            ctx.cfg = config_for(date)
        day_source = source(date) if callable(source) else source
        day_seed = seed(date) if callable(seed) else seed
        request_day(ctx, date, trigger=trigger, source=day_source, seed=day_seed)
        drain(rt, dispatcher, [ns])
        while unfinished_stages(ctx.store, date):
            specs = resume(ctx.store, date)
            if not specs or not all(dispatcher.enqueue(spec) for spec in specs):
                break
            drain(rt, dispatcher, [ns])
        missing = unfinished_stages(ctx.store, date)
        if missing:
            refuse_if_dispatched(rt.redis, ns, me=dispatcher.name)
            errors = [
                f"{f.stage} {f.date} ({f.job_id}): {f.error}"
                for f in failed_jobs(rt, ns)
                if f.date in (date, shift_date(date, -1))
            ]
            raise RunFailed(
                f"day {date}: {', '.join(missing)} did not complete" + (f" ({'; '.join(errors)})" if errors else "")
            )
        if on_day is not None:
            on_day(date)


def unfinished_stages(store: EventStore, date: str) -> list[str]:
    """The stages of day `date`'s chain that have no event yet, as "stage day"."""
    return [f"{stage} {day}" for stage, day in missing_stages(store, date)]
