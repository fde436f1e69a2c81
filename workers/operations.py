"""Operations over a namespace: what `varro status`, `backfill`, `replay` and
`override` do, without the command line.

Each operation takes the process runtime and plain values and returns data the
CLI renders; none of them prints. They share one definition of a day's state
(`day_state`), built from the log's days x stages grid (`varro.lineage.day_grid`),
the chain rule of the dispatcher (`workers.dispatcher.missing_stages`) and RQ's
registries for what is running or failed right now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from rq import Queue, Worker

from events.consumer import Consumer, DeadLetter
from events.ids import shift_date
from events.schema import AnyEvent, EpochTrained
from events.store import EventStore
from jobs.daily import day_config, run_seed
from varro.config import VarroConfig
from varro.errors import UsageProblem
from varro.lineage import DONE, MISSING, day_grid
from workers.dispatcher import FETCH_QUEUE, GROUP, MODEL_QUEUE, Dispatcher, JobSpec, missing_stages
from workers.inprocess import FailedJob, drain, failed_jobs, requeue_failed, run_days
from workers.runtime import Runtime

STAGES = ("fetch", "generate", "rank", "train")
Reprocess = Literal["missing", "failed", "all"]
DayState = Literal["missing", "failed", "running", "incomplete", "done"]


def events_of(rt: Runtime, ns: str) -> list[AnyEvent]:
    return [stored.event for stored in rt.store(ns).read()]


def running_jobs(rt: Runtime, ns: str) -> list[tuple[str, str]]:
    """(stage, date) of the namespace's jobs that RQ has queued or started."""
    out = []
    for name in (FETCH_QUEUE, MODEL_QUEUE):
        q = Queue(name, connection=rt.redis)
        for job_id in q.started_job_registry.get_job_ids() + q.get_job_ids():
            job = q.fetch_job(job_id)
            if job is not None and (job.meta or {}).get("ns") == ns:
                out.append((job.meta["stage"], job.meta["date"]))
    return out


def stage_grid(rt: Runtime, ns: str, events: list[AnyEvent] | None = None) -> dict[str, dict[str, str]]:
    """date -> stage -> done | missing | failed | running: the log's grid with RQ's live states over it."""
    grid = day_grid(events_of(rt, ns) if events is None else events)
    overlay = [(f.stage, f.date, "failed") for f in failed_jobs(rt, ns)]
    overlay += [(stage, date, "running") for stage, date in running_jobs(rt, ns)]
    for stage, date, state in overlay:
        row = grid.setdefault(date, {s: MISSING for s in STAGES})
        if row.get(stage) != DONE:
            row[stage] = state
    return grid


def day_state(grid: dict[str, dict[str, str]], store: EventStore, date: str) -> DayState:
    """One word for a day: never fetched, a stage failed or is running, its chain stopped short, or done.

    "Done" means the dispatcher's chain for the day has nothing missing: the day
    is fetched and generated, and the previous day's roll-outs (if any) are
    ranked and trained.
    """
    row = grid.get(date)
    if row is None or row.get("fetch") == MISSING:
        return "missing"
    if "failed" in row.values():
        return "failed"
    if "running" in row.values():
        return "running"
    return "incomplete" if missing_stages(store, date) else "done"


def stranded_days(grid: dict[str, dict[str, str]]) -> list[str]:
    """Days whose roll-outs wait for an outcome day that was never fetched while a later day was."""
    last = max(grid) if grid else ""
    return [
        d
        for d, row in sorted(grid.items())
        if row.get("generate") == DONE
        and row.get("rank") != DONE
        and grid.get(shift_date(d, 1), {}).get("fetch") != DONE
        and d < last
    ]


@dataclass(frozen=True)
class NamespaceStatus:
    ns: str
    grid: dict[str, dict[str, str]]
    states: dict[str, DayState]
    queued: dict[str, int]
    workers: list[tuple[str, str]]
    dead_letters: list[DeadLetter]
    failed: list[FailedJob]
    stranded: list[str]


def namespace_status(rt: Runtime, ns: str) -> NamespaceStatus:
    store = rt.store(ns)
    grid = stage_grid(rt, ns)
    return NamespaceStatus(
        ns=ns,
        grid=grid,
        states={date: day_state(grid, store, date) for date in grid},
        queued={name: Queue(name, connection=rt.redis).count for name in (FETCH_QUEUE, MODEL_QUEUE)},
        workers=[(w.name, w.get_state()) for w in Worker.all(connection=rt.redis)],
        dead_letters=Consumer(rt.redis, ns, GROUP, "status").dead_letters(),
        failed=failed_jobs(rt, ns),
        stranded=stranded_days(grid),
    )


@dataclass(frozen=True)
class BackfillPlan:
    ns: str
    target: str
    rows: list[tuple[str, DayState, bool]]  # (date, state in ns, run it?)

    @property
    def todo(self) -> list[str]:
        return [date for date, _, run in self.rows if run]


def plan_backfill(rt: Runtime, ns: str, dates: list[str], reprocess: Reprocess, into: str | None) -> BackfillPlan:
    """Which days of `dates` a backfill runs: never-fetched or stopped-short days, failed days, or all."""
    if reprocess == "all" and not into:
        raise UsageProblem("--reprocess all rewrites recorded days: give --into NEW to fork instead")
    store, grid = rt.store(ns), stage_grid(rt, ns)
    wanted: dict[Reprocess, tuple[DayState, ...]] = {
        "all": ("missing", "failed", "running", "incomplete", "done"),
        "failed": ("failed",),
        "missing": ("missing", "incomplete"),
    }
    rows = []
    for date in dates:
        state = day_state(grid, store, date)
        rows.append((date, state, state in wanted[reprocess]))
    return BackfillPlan(ns=ns, target=into or ns, rows=rows)


def run_backfill(
    rt: Runtime,
    plan: BackfillPlan,
    source: str,
    *,
    on_day: Callable[[str], None] | None = None,
) -> None:
    """Carry out a plan: fill the days in place, or fork them into the plan's target namespace."""
    if plan.target != plan.ns:
        fork(rt, plan.ns, plan.target, plan.todo, source, on_day=on_day)
        return
    requeue_failed(rt, plan.ns, plan.todo)
    run_days(rt, plan.ns, plan.todo, source=source, on_day=on_day)


def recorded_config(rt: Runtime, ns: str, into: str, date: str) -> VarroConfig:
    """The config `ns` recorded for `date`, to run the same day in namespace `into`."""
    return msgspec.structs.replace(day_config(rt.context(ns), date), ns=into)


def fork(
    rt: Runtime,
    source_ns: str,
    into: str,
    dates: list[str],
    source: str,
    *,
    on_day: Callable[[str], None] | None = None,
) -> None:
    """Run `dates` into the new namespace `into` with `source_ns`'s recorded seeds and config.

    Days `source_ns` fetched are replayed from its recorded headlines (never
    re-fetched); days it never fetched come from `source`.
    """
    if EventStore(rt.redis, into).count():
        raise UsageProblem(f"namespace {into!r} is not empty; forks go into a new namespace")
    recorded = set(rt.store(source_ns).dates("HeadlinesFetched"))
    run_days(
        rt,
        into,
        dates,
        source=lambda d: f"replay:{source_ns}" if d in recorded else source,
        seed=lambda d: run_seed(rt.context(source_ns), d),
        config_for=lambda d: recorded_config(rt, source_ns, into, d),
        trigger="backfill",
        on_day=on_day,
    )


def replay_dates(rt: Runtime, ns: str, start: str | None, end: str | None) -> list[str]:
    """The contiguous recorded range of `ns` within [start, end] that a replay re-executes."""
    from events.ids import date_range

    recorded = rt.store(ns).dates("HeadlinesFetched")
    dates = [d for d in recorded if (start is None or d >= start) and (end is None or d <= end)]
    if not dates:
        raise UsageProblem(f"namespace {ns!r} has no recorded days in that range")
    dates = date_range(dates[0], dates[-1])
    missing = [d for d in dates if d not in recorded]
    if missing:
        raise UsageProblem(
            f"namespace {ns!r} has gaps (no headlines for {', '.join(missing)}); replay a contiguous range"
        )
    return dates


@dataclass(frozen=True)
class OverrideResult:
    failures: list[FailedJob] = field(default_factory=list)
    retrain_needed: bool = False  # the new ranking is recorded but the day was trained on an earlier one


def override(rt: Runtime, ns: str, prediction_date: str, headlines_date: str, *, force: bool) -> OverrideResult:
    """Rank day D against the headlines of day H, then let the chain continue (train D, generate H)."""
    if headlines_date <= prediction_date:
        raise UsageProblem(
            f"--headlines-date {headlines_date} must be after --prediction-date {prediction_date}: "
            "predictions are judged against what happened later"
        )
    store = rt.store(ns)
    for kind, day in (("RolloutsGenerated", prediction_date), ("HeadlinesFetched", headlines_date)):
        if store.latest(kind, day) is None:
            what = "roll-outs" if kind == "RolloutsGenerated" else "headlines"
            raise UsageProblem(f"namespace {ns!r} has no {what} for {day} ({kind}): nothing to override with")
    requeue_failed(rt, ns, [prediction_date])
    dispatcher = Dispatcher(rt.redis, rt.cfg, name=f"override-{ns}")
    spec = JobSpec(
        "rank",
        ns,
        prediction_date,
        cause=f"override:{headlines_date}:{store.last_entry_id()}",
        correlation_id=f"override:{prediction_date}:{headlines_date}",
        kwargs={"outcome_date": headlines_date, "force": force},
    )
    dispatcher.enqueue(spec)
    drain(rt, dispatcher, [ns])
    ranked, trained = store.latest("Ranked", prediction_date), store.latest("EpochTrained", prediction_date)
    retrain = isinstance(trained, EpochTrained) and ranked is not None and trained.ranked_event_id != ranked.event_id
    failures = [f for f in failed_jobs(rt, ns) if f.date in (prediction_date, headlines_date)]
    return OverrideResult(failures=failures, retrain_needed=retrain)
