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
from rq import Worker

from events.consumer import Consumer, DeadLetter
from events.ids import shift_date
from events.schema import AnyEvent, CheckpointRef, EpochTrained, Evaluated, HeadlineSource, PanelFrozen
from events.store import EventStore
from jobs.daily import day_config, run_seed
from varro.config import VarroConfig
from varro.errors import UsageProblem
from varro.lineage import DONE, MISSING, day_grid
from workers.dispatcher import FETCH_QUEUE, GROUP, MODEL_QUEUE, Dispatcher, JobSpec, missing_stages
from workers.inprocess import FailedJob, drain, failed_jobs, requeue_failed, run_days
from workers.liveness import recover_abandoned, stalled_job_ids, worker_state
from workers.queues import SERIALIZER, fetch_job, queue
from workers.runtime import Runtime

STAGES = ("fetch", "generate", "rank", "train")
Reprocess = Literal["missing", "failed", "all"]
DayState = Literal["missing", "failed", "stalled", "running", "incomplete", "done"]


def events_of(rt: Runtime, ns: str) -> list[AnyEvent]:
    return [stored.event for stored in rt.store(ns).read()]


def _stages_of(rt: Runtime, ns: str, name: str, job_ids: list[str]) -> list[tuple[str, str]]:
    out = []
    for job_id in job_ids:
        job = fetch_job(name, rt.redis, job_id)
        meta = (job.meta or {}) if job is not None else {}
        if meta.get("ns") == ns and "stage" in meta and "date" in meta:
            out.append((meta["stage"], meta["date"]))
    return out


def running_jobs(rt: Runtime, ns: str) -> list[tuple[str, str]]:
    """(stage, date) of the namespace's jobs that RQ has queued, or started with a live heartbeat.

    Read without RQ's registry cleanup: looking must not change what it looks at.
    """
    out = []
    for name in (FETCH_QUEUE, MODEL_QUEUE):
        q = queue(name, rt.redis)
        stalled = set(stalled_job_ids(rt.redis, name))
        started = [j for j in q.started_job_registry.get_job_ids(cleanup=False) if j not in stalled]
        out += _stages_of(rt, ns, name, started + q.get_job_ids())
    return out


def stalled_jobs(rt: Runtime, ns: str) -> list[tuple[str, str]]:
    """(stage, date) of the namespace's started jobs whose worker stopped beating (killed, lost):
    the dispatcher or a worker re-runs them shortly; backfill does it at once."""
    names = (FETCH_QUEUE, MODEL_QUEUE)
    return [sd for name in names for sd in _stages_of(rt, ns, name, stalled_job_ids(rt.redis, name))]


def stage_grid(rt: Runtime, ns: str, events: list[AnyEvent] | None = None) -> dict[str, dict[str, str]]:
    """date -> stage -> done | missing | failed | stalled | running: the log's grid with RQ's live states over it."""
    grid = day_grid(events_of(rt, ns) if events is None else events)
    overlay = [(f.stage, f.date, "failed") for f in failed_jobs(rt, ns)]
    overlay += [(stage, date, "stalled") for stage, date in stalled_jobs(rt, ns)]
    overlay += [(stage, date, "running") for stage, date in running_jobs(rt, ns)]
    for stage, date, state in overlay:
        row = grid.setdefault(date, {s: MISSING for s in STAGES})
        if row.get(stage) != DONE:
            row[stage] = state
    return grid


def day_state(grid: dict[str, dict[str, str]], store: EventStore, date: str) -> DayState:
    """One word for a day: never fetched, a stage failed, stalled (its worker died) or is running,
    its chain stopped short, or done.

    "Done" means the dispatcher's chain for the day has nothing missing: the day
    is fetched and generated, and the previous day's roll-outs (if any) are
    ranked and trained.
    """
    row = grid.get(date)
    if row is None or row.get("fetch") == MISSING:
        return "missing"
    if "failed" in row.values():
        return "failed"
    if "stalled" in row.values():
        return "stalled"
    if "running" in row.values():
        return "running"
    return "incomplete" if missing_stages(store, date) else "done"


def stranded_days(grid: dict[str, dict[str, str]]) -> list[str]:
    """Days whose roll-outs wait for an outcome day that was never fetched while a later day was."""
    last = max(grid) if grid else ""
    # `d < last` first: the day after the last one is never computed, so a recorded 9999-12-31 cannot overflow
    return [
        d
        for d, row in sorted(grid.items())
        if d < last
        and row.get("generate") == DONE
        and row.get("rank") != DONE
        and grid.get(shift_date(d, 1), {}).get("fetch") != DONE
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
    foreign: int  # stream entries Varro did not write, skipped while reading


def namespace_status(rt: Runtime, ns: str) -> NamespaceStatus:
    store = rt.store(ns)
    grid = stage_grid(rt, ns)
    return NamespaceStatus(
        ns=ns,
        grid=grid,
        states={date: day_state(grid, store, date) for date in grid},
        queued={name: queue(name, rt.redis).count for name in (FETCH_QUEUE, MODEL_QUEUE)},
        workers=[
            (w.name, worker_state(w, rt.cfg.workers.liveness_s))
            for w in Worker.all(connection=rt.redis, serializer=SERIALIZER)
        ],
        dead_letters=Consumer(rt.redis, ns, GROUP, "status").dead_letters(),
        failed=failed_jobs(rt, ns),
        stranded=stranded_days(grid),
        foreign=len(store.foreign_seen),
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
        "all": ("missing", "failed", "stalled", "running", "incomplete", "done"),
        "failed": ("failed", "stalled"),
        "missing": ("missing", "incomplete", "stalled"),
    }
    rows = []
    for date in dates:
        state = day_state(grid, store, date)
        rows.append((date, state, state in wanted[reprocess]))
    return BackfillPlan(ns=ns, target=into or ns, rows=rows)


def run_backfill(
    rt: Runtime,
    plan: BackfillPlan,
    source: HeadlineSource | str,
    *,
    on_day: Callable[[str], None] | None = None,
) -> None:
    """Carry out a plan: fill the days in place, or fork them into the plan's target namespace.

    In place, jobs whose worker died are recovered first (re-run, or failed
    once out of retries), then failed jobs are requeued: a stalled day resumes
    its own job instead of colliding with it.
    """
    if plan.target != plan.ns:
        fork(rt, plan.ns, plan.target, plan.todo, source, on_day=on_day)
        return
    recover_abandoned(rt.redis, (FETCH_QUEUE, MODEL_QUEUE))
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
    source: HeadlineSource | str,
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
        source=lambda d: HeadlineSource(kind="replay", namespace=source_ns) if d in recorded else source,
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


# ------------------------------------------------------------------ evaluation


def resolve_checkpoint(rt: Runtime, ns: str, ref: str) -> tuple[CheckpointRef, str]:
    """(checkpoint, label) named by "base", a trained day (YYYY-MM-DD), a sha256 prefix or a directory.

    Only checkpoints this namespace's log knows can be evaluated on a panel:
    the log is what says which headlines they were trained on. "base" is the
    base the namespace recorded (`base_checkpoint`), pinned by its hash.
    """
    from pathlib import Path

    from jobs.context import base_checkpoint
    from varro.checkpoints import checkpoint_sha256
    from varro.lineage import CheckpointHistory, LineageError

    base = base_checkpoint(rt.context(ns))
    if ref == "base":
        return base, "base"
    store = rt.store(ns)
    if len(ref) == 10 and ref[4] == "-" and ref[7] == "-":
        trained = store.latest_of(EpochTrained, ref)
        if trained is None:
            raise UsageProblem(f"namespace {ns!r} trained nothing on {ref}: no checkpoint of that day")
        return trained.checkpoint, ref
    history = CheckpointHistory(s.event for s in store.read(types=["EpochTrained", "RolloutsGenerated"]))
    if Path(ref).expanduser().is_dir():
        sha = checkpoint_sha256(Path(ref).expanduser())
    else:
        try:
            sha = history.resolve(ref)
        except LineageError as exc:
            if base.sha256.startswith(ref.lower()):
                return base, "base"
            raise UsageProblem(str(exc)) from None
    if sha == base.sha256:
        return base, "base"
    epoch = history.producer(sha)
    if epoch is not None:
        return epoch.checkpoint, epoch.date
    raise UsageProblem(
        f"checkpoint {sha[:12]} was not trained in namespace {ns!r}, so the log cannot say what it was trained on"
    )


def panel_event(rt: Runtime, ns: str, spec: str) -> PanelFrozen:
    """The `PanelFrozen` that `spec` names, freezing it first where needed.

    "sample": the bundled sample days; "log": this namespace's own fetched
    days; a path to a panel JSON file; or the event id (or artifact sha256,
    or a prefix of either) of a panel already frozen in this namespace.
    """
    from pathlib import Path

    from jobs.evaluate import freeze_panel, logged_days, record_panel
    from varro.evaluation import panel as panels

    ctx = rt.context(ns)
    if spec == "sample":
        from varro.headlines.collect import collect, sample_dates

        days = {d: collect("sample", d, rt.cfg.headlines).headlines for d in sample_dates()}
        appended = freeze_panel(ctx, days, name="sample", source="sample")
    elif spec == "log":
        days = logged_days(ctx)
        if not days:
            raise UsageProblem(f"namespace {ns!r} has no fetched days to build a panel from")
        appended = freeze_panel(ctx, days, name=f"{ns}-log", source=f"log:{ns}")
    elif Path(spec).is_file():
        panel = panels.decode(Path(spec).read_bytes(), origin=spec)
        appended = record_panel(ctx, panel, f"file:{Path(spec).name}")
    else:
        wanted = spec.lower()
        found = [
            s.event
            for s in rt.store(ns).read(types=["PanelFrozen"])
            if s.event.event_id.startswith(wanted)
            or (isinstance(s.event, PanelFrozen) and s.event.artifact.sha256.startswith(wanted))
        ]
        if len(found) != 1 or not isinstance(found[0], PanelFrozen):
            what = "no" if not found else f"{len(found)}"
            raise UsageProblem(
                f"{what} panel in namespace {ns!r} matches {spec!r}: use sample, log, a panel file, "
                "or the id of a frozen panel (varro panel list)"
            )
        return found[0]
    event = appended.event
    assert isinstance(event, PanelFrozen)
    return event


def evaluate(
    rt: Runtime,
    ns: str,
    a: tuple[CheckpointRef, str],
    b: tuple[CheckpointRef, str],
    panel: PanelFrozen,
    *,
    purpose: str = "ab",
    date: str | None = None,
    force: bool = False,
) -> Evaluated:
    from jobs.evaluate import evaluate_job

    appended = evaluate_job(
        rt.context(ns),
        a[0],
        b[0],
        panel.event_id,
        purpose=purpose,
        labels=(a[1], b[1]),
        date=date,
        force=force,
    )
    event = appended.event
    assert isinstance(event, Evaluated)
    return event


def ab(rt: Runtime, ns: str, a_ref: str, b_ref: str, panel_spec: str, *, force: bool = False) -> Evaluated:
    """`varro ab`: B against A on a panel. Against the base or B's own parent it is also a point of the
    learning curve (purpose vs_base / vs_parent, dated by B's training day)."""
    if not rt.store(ns).count():
        raise UsageProblem(f"namespace {ns!r} has no events: nothing was trained there (varro namespaces lists them)")
    a, b = resolve_checkpoint(rt, ns, a_ref), resolve_checkpoint(rt, ns, b_ref)
    panel = panel_event(rt, ns, panel_spec)
    trained = rt.store(ns).latest("EpochTrained", b[1]) if b[1] != "base" else None
    purpose, date = "ab", None
    if isinstance(trained, EpochTrained) and trained.checkpoint.sha256 == b[0].sha256:
        date = b[1]
        if a[1] == "base":
            purpose = "vs_base"
        elif trained.parent_checkpoint.sha256 == a[0].sha256:
            purpose = "vs_parent"
    return evaluate(rt, ns, a, b, panel, purpose=purpose, date=date, force=force)


def evaluate_last_against_base(rt: Runtime, ns: str, panel_spec: str) -> Evaluated | None:
    """The learning verdict of a run: its newest checkpoint against the base model, on a held-out panel."""
    trained = rt.store(ns).dates("EpochTrained")
    if not trained:
        return None
    last = trained[-1]
    panel = panel_event(rt, ns, panel_spec)
    base = resolve_checkpoint(rt, ns, "base")
    return evaluate(rt, ns, base, resolve_checkpoint(rt, ns, last), panel, purpose="vs_base", date=last)


def verdict(event: Evaluated) -> str:
    """One line a person reads first: does B beat A on the held-out panel, by how much, how sure."""
    w = event.win_rate
    if w.low > 0.5:
        word = "beats"
    elif w.high < 0.5:
        word = "is worse than"
    else:
        word = "is not distinguishable from"
    diff = (
        ""
        if event.score_diff is None
        else (
            f"; judge score {event.score_diff.value:+.4f} [{event.score_diff.low:+.4f}, {event.score_diff.high:+.4f}]"
        )
    )
    return (
        f"{event.b.label} ({event.b.checkpoint.sha256[:12]}) {word} {event.a.label} on {event.headlines} held-out "
        f"headlines x {event.k}: win rate {w.value:.3f} [95% CI {w.low:.3f}, {w.high:.3f}]{diff} ({event.judge} judge)"
    )


def evaluate_day(rt: Runtime, ns: str, date: str, panel_spec: str) -> list[Evaluated]:
    """A learning curve point: the checkpoint trained on `date` against the base and against its parent."""
    trained = rt.store(ns).latest("EpochTrained", date)
    if not isinstance(trained, EpochTrained):
        return []
    panel = panel_event(rt, ns, panel_spec)
    b = (trained.checkpoint, date)
    base = resolve_checkpoint(rt, ns, "base")
    out = [evaluate(rt, ns, base, b, panel, purpose="vs_base", date=date)]
    if trained.parent_checkpoint.sha256 != base[0].sha256:
        parent = resolve_checkpoint(rt, ns, trained.parent_checkpoint.sha256)
        out.append(evaluate(rt, ns, parent, b, panel, purpose="vs_parent", date=date))
    return out


# ------------------------------------------------------------------ checks and listings


def check_request(
    cfg: VarroConfig, source: HeadlineSource | str, dates: list[str], *, today: str | None = None
) -> HeadlineSource:
    """The source to record for `dates`, after refusing what would only fail later in a worker:
    a bad source (unknown kind, missing file, live RSS for a past day, a day the sample lacks) or a
    base model that is not where the config says. Reads no weights and contacts no hub."""
    from varro.headlines.spec import check_source
    from varro.model.cache import ModelError, check_base

    checked = check_source(source, dates, today=today)  # files made absolute: a worker elsewhere reads them
    try:
        check_base(cfg.model.base)
    except ModelError as exc:
        raise UsageProblem(str(exc)) from None
    return checked


# Day states a person must look at: `varro status` exits 3 when any day is in one of them.
ATTENTION_STATES = ("failed", "stalled")


def needs_attention(status: NamespaceStatus) -> list[str]:
    """Why a monitor should alert on `status` (empty when nothing is wrong)."""
    reasons = [f"{date} {state}" for date, state in sorted(status.states.items()) if state in ATTENTION_STATES]
    if status.dead_letters:
        reasons.append(f"{len(status.dead_letters)} dead letter(s)")
    return reasons


@dataclass(frozen=True)
class NamespaceSummary:
    ns: str
    events: int  # stream entries, foreign ones included
    first_date: str | None
    last_date: str | None


def namespace_summaries(rt: Runtime) -> list[NamespaceSummary]:
    """Every namespace on the server with its size and date span, read from the per-type date
    indexes (one small range read per event type), never the streams themselves."""
    from events.schema import EVENT_TYPES
    from events.store import dates_key, stream_key

    out = []
    for ns in EventStore.namespaces(rt.redis):
        pipe = rt.redis.pipeline(transaction=False)
        pipe.xlen(stream_key(ns))
        for event_type in EVENT_TYPES:
            pipe.zrange(dates_key(ns, event_type), 0, 0)
            pipe.zrange(dates_key(ns, event_type), -1, -1)
        count, *ends = pipe.execute()
        dates = sorted(d.decode() if isinstance(d, bytes) else d for found in ends for d in found)
        out.append(NamespaceSummary(ns, int(count), dates[0] if dates else None, dates[-1] if dates else None))
    return out


@dataclass(frozen=True)
class OutputComparison:
    date: str
    stage: str
    mine: str | None  # output hash, None where this side has not run the stage
    theirs: str | None
    verdict: Literal["same", "differ", "not run"]


def compare_outputs(mine: list[AnyEvent], theirs: list[AnyEvent]) -> list[OutputComparison]:
    """Stage by stage, (date, stage) ordered: equal, different, or run on one side only.

    A stage one side has not run has nothing to compare with: it is "not run",
    never a difference (an unfinished replay is incomplete, not wrong).
    """
    from varro.outputs import output_hashes

    a, b = output_hashes(mine), output_hashes(theirs)
    rows = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        verdict: Literal["same", "differ", "not run"] = (
            "not run" if x is None or y is None else "same" if x == y else "differ"
        )
        rows.append(OutputComparison(key[0], key[1], x, y, verdict))
    return rows
