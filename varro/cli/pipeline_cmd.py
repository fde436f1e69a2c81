"""Pipeline commands: run, daily, backfill, override, replay, verify, rebuild,
status, lineage, and the long-running processes (worker, dispatcher, scheduler,
dashboard) that the Procfile starts."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from events.ids import shift_date, today_utc
from events.schema import HeadlineSource
from varro.cli.common import (
    SEED,
    config_options,
    dates_between,
    parse_date,
    parse_ns,
    require_namespace,
    runtime_for,
)
from varro.config import VarroConfig

if TYPE_CHECKING:
    from events.schema import AnyEvent, Evaluated
    from workers.operations import NamespaceStatus, NamespaceSummary, Reprocess
    from workers.runtime import Runtime

OnDay = Callable[[str], None]
"""Called with each day as its chain completes (progress)."""

# Off a terminal (logs, CI) rich would wrap the per-day table at 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=160)


def _source_spec(source: str, files: tuple[str, ...]) -> HeadlineSource:
    """The source of --source and --file: each --file is one path, whatever characters it holds."""
    from varro.headlines.spec import files_source, source_from_spec

    if source == "files":
        if not files:
            raise click.UsageError("--source files needs at least one --file PATH")
        missing = [f for f in files if not Path(f).exists()]
        if missing:
            raise click.UsageError(f"file source not found: {', '.join(missing)}")
        return files_source(files)
    if files:
        raise click.UsageError("--file is only used with --source files")
    return source_from_spec(source)


def _source_dates(cfg: VarroConfig, source: str, files: tuple[str, ...]) -> list[str]:
    from varro.headlines.collect import file_dates, sample_dates

    if source == "sample":
        return sample_dates()
    if source == "files":
        try:  # under the config's own file bounds, as the fetch jobs will read the files
            return file_dates([Path(f) for f in files], cfg.headlines)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    return [today_utc()]


def _checked_source(cfg: VarroConfig, spec: HeadlineSource | str, dates: list[str]) -> HeadlineSource:
    """`spec` as it will be recorded, or a usage error before anything is (see operations.check_request)."""
    from varro.errors import UsageProblem
    from workers.operations import check_request

    try:
        return check_request(cfg, spec, dates)
    except UsageProblem as exc:
        raise click.UsageError(str(exc)) from None


def _events(rt: Runtime, ns: str) -> list[AnyEvent]:
    from workers.operations import events_of

    return events_of(rt, ns)


def _project(rt: Runtime, ns: str) -> int:
    from varro.projections import project, write_projections

    files = project(_events(rt, ns), ns)
    write_projections(files, rt.cfg.data_path, ns)
    return len(files)


def _print_report(rt: Runtime, ns: str) -> None:
    from varro.report import day_rows, render_table

    console.print(render_table(day_rows(_events(rt, ns))))


def _ensure_default_model(cfg: VarroConfig) -> None:
    """Build varro-tiny up front on a first run, visibly, rather than silently inside a job."""
    from varro.model.build import MODEL_NAME
    from varro.model.cache import default_model_path, ensure_default_model

    if cfg.model.base != MODEL_NAME or default_model_path().is_dir():
        return
    console.print(
        f"building the default model {MODEL_NAME} once (a few minutes on 2 CPU cores; "
        f"cached under {default_model_path().parent})"
    )
    with console.status("training varro-tiny") as status:
        ensure_default_model(log=lambda line: status.update(f"varro-tiny: {line}"))


def _run_in_process(rt: Runtime, ns: str, dates: list[str], *, panel: str | None = None, **kwargs: Any) -> None:
    """`run_days` with per-day progress, then the projections, the per-day table and,
    with a `panel`, the learning verdict on it."""
    from workers.inprocess import run_days
    from workers.operations import evaluate_day

    every_day = panel if rt.cfg.eval.every_day else None  # the panel each day is judged on, if any

    def operation(on_day: OnDay) -> None:
        def day_done(date: str) -> None:
            on_day(date)
            if every_day is not None:  # day D's chain trained D-1 (on D's headlines as its outcomes)
                for event in evaluate_day(rt, ns, shift_date(date, -1), every_day):
                    console.print(f"    {event.date} {event.purpose}: {_short_verdict(event)}")

        run_days(rt, ns, dates, on_day=day_done, **kwargs)

    _with_progress(rt, ns, dates, operation)
    if panel is not None:
        _print_verdict(rt, ns, panel)


def _short_verdict(event: Evaluated) -> str:
    w = event.win_rate
    return f"win rate {w.value:.3f} [{w.low:.3f}, {w.high:.3f}] vs {event.a.label}"


def _print_verdict(rt: Runtime, ns: str, panel: str) -> None:
    from varro.errors import VarroError
    from workers.operations import evaluate_last_against_base, verdict

    with console.status("judging the last checkpoint against the base on the held-out panel"):
        try:
            event = evaluate_last_against_base(rt, ns, panel)
        except VarroError as exc:
            console.print(f"[yellow]no learning verdict:[/] {exc}")
            return
    if event is None:
        console.print("[yellow]no learning verdict:[/] nothing was trained in this run")
        return
    console.print(f"[bold]Verdict:[/] {verdict(event)}")


def _with_progress(rt: Runtime, ns: str, dates: list[str], operation: Callable[[OnDay], object]) -> None:
    """Run `operation(on_day)` under a status line; a failed day exits 1 after showing what was recorded."""
    from varro.errors import UsageProblem
    from workers.inprocess import RunFailed

    _ensure_default_model(rt.cfg)
    started = time.perf_counter()
    with console.status(f"[bold]{ns}[/]: starting") as status:
        done: list[str] = []

        def on_day(date: str) -> None:
            done.append(date)
            console.print(f"  [green]✓[/] {date} done ({len(done)}/{len(dates)}, {time.perf_counter() - started:.0f}s)")
            status.update(f"[bold]{ns}[/]: {len(done)}/{len(dates)} days")

        try:
            operation(on_day)
        except UsageProblem as exc:
            raise click.UsageError(str(exc)) from None
        except RunFailed as exc:
            console.print(f"[red]run stopped:[/] {exc}")
            _project(rt, ns)
            _print_report(rt, ns)
            sys.exit(1)
    _project(rt, ns)
    _print_report(rt, ns)
    console.print(
        f"{len(dates)} day(s) in namespace [bold]{ns}[/] in {time.perf_counter() - started:.1f}s; "
        f"files under {rt.cfg.data_path}"
    )


@click.command("run")
@config_options
@click.option("--from", "start", callback=parse_date, help="First day (YYYY-MM-DD). Default: the source's first day.")
@click.option("--to", "end", callback=parse_date, help="Last day. Default: the source's last day.")
@click.option("--source", type=click.Choice(["sample", "files", "rss"]), default="sample", show_default=True)
@click.option("--file", "files", multiple=True, help="Headline file (JSON, JSONL, CSV) for --source files.")
@click.option("--seed", type=SEED, help="Base seed for every day (0 .. 2**63-1). Default: derived from config and ns.")
def run_cmd(
    cfg: VarroConfig, start: str | None, end: str | None, source: str, files: tuple[str, ...], seed: int | None
) -> None:
    """Run the whole daily loop over a date range in this process (embedded server, burst workers)."""
    spec = _source_spec(source, files)
    available = _source_dates(cfg, source, files)
    if not available:
        raise click.UsageError(f"the {source} source has no days")
    dates = dates_between(start or available[0], end or available[-1])
    spec = _checked_source(cfg, spec, dates)
    rt = runtime_for(cfg)
    console.print(
        f"Varro run: namespace [bold]{cfg.ns}[/], {len(dates)} day(s) {dates[0]} .. {dates[-1]}, "
        f"source {source}, model {cfg.model.base}, judge {cfg.judge.kind}"
    )
    panel = _run_panel(cfg, source)
    _run_in_process(rt, cfg.ns, dates, source=spec, seed=seed, panel=panel)


def _run_panel(cfg: VarroConfig, source: str) -> str | None:
    """The panel a run judges itself on (config eval.panel; "auto" follows the source)."""
    spec = cfg.eval.panel
    if spec == "none" or (cfg.generation.holdout_share <= 0 and spec in ("auto", "log")):
        return None
    if spec == "auto":
        return "sample" if source == "sample" else "log"
    return spec


@click.command("daily")
@config_options
@click.option("--date", callback=parse_date, help="The day to run. Default: today (UTC).")
@click.option("--seed", type=SEED, help="Base seed (0 .. 2**63-1). Default: derived from config seed and namespace.")
@click.option("--source", help="sample | rss | files:PATH[,PATH]. Default: config workers.daily_source.")
@click.option("--force", is_flag=True, help="Request the day again as a new, marked run.")
def daily_cmd(cfg: VarroConfig, date: str | None, seed: int | None, source: str | None, force: bool) -> None:
    """Request the daily update for a day; the dispatcher and workers carry it out.

    The source and the base model are checked first: a request that could only
    fail in a worker is refused here, before anything is recorded.
    """
    from events.schema import DailyRunRequested
    from jobs.daily import request_day
    from varro.headlines.spec import describe

    day = date or today_utc()
    spec = _checked_source(cfg, source or cfg.workers.daily_source, [day])
    rt = runtime_for(cfg)
    appended = request_day(rt.context(cfg.ns), day, trigger="manual", source=spec, seed=seed, force=force)
    state = "requested" if appended.created else "already requested"
    event = appended.event
    if not isinstance(event, DailyRunRequested):  # its id names a DailyRunRequested
        raise click.ClickException(f"event {event.event_id} is a {type(event).__name__}, not the day's request")
    console.print(
        f"{event.date} {state} in {cfg.ns}: event {event.event_id} (seed {event.seed}, source {describe(event.source)})"
    )


@click.command("backfill")
@config_options
@click.option("--from", "start", callback=parse_date, required=True)
@click.option("--to", "end", callback=parse_date, required=True)
@click.option("--into", callback=parse_ns, help="Fork into this new namespace instead of filling --ns in place.")
@click.option("--reprocess", type=click.Choice(["missing", "failed", "all"]), default="missing", show_default=True)
@click.option(
    "--source",
    type=click.Choice(["sample", "files"]),
    default="sample",
    show_default=True,
    help="Where headlines of days never fetched come from: the bundled sample days or --file "
    "files (never live RSS for a past day).",
)
@click.option("--file", "files", multiple=True)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
def backfill_cmd(
    cfg: VarroConfig,
    start: str,
    end: str,
    into: str | None,
    reprocess: Reprocess,  # one of click.Choice's
    source: str,
    files: tuple[str, ...],
    dry_run: bool,
) -> None:
    """Fill missing or failed days of a namespace, or fork a date range into a new one."""
    from varro.errors import UsageProblem
    from workers.operations import plan_backfill, run_backfill

    dates = dates_between(start, end)
    spec = _source_spec(source, files)
    rt = runtime_for(cfg)
    try:
        plan = plan_backfill(rt, cfg.ns, dates, reprocess, into)
    except UsageProblem as exc:
        raise click.UsageError(str(exc)) from None
    table = Table("date", "state in " + cfg.ns, "action")
    for date, state, run in plan.rows:
        table.add_row(date, state, f"run into {plan.target}" if run else "keep")
    console.print(table)
    if dry_run or not plan.todo:
        console.print("dry run: nothing changed" if dry_run else "nothing to do")
        return
    _with_progress(rt, plan.target, plan.todo, lambda on_day: run_backfill(rt, plan, spec, on_day=on_day))


@click.command("override")
@config_options
@click.option("--prediction-date", callback=parse_date, required=True, help="Day D whose roll-outs are ranked.")
@click.option("--headlines-date", callback=parse_date, required=True, help="Day H whose headlines are the outcomes.")
@click.option(
    "--force", is_flag=True, help="Rank again even if D is already ranked, and re-train on it (new, marked events)."
)
def override_cmd(cfg: VarroConfig, prediction_date: str, headlines_date: str, force: bool) -> None:
    """Rank day D against the headlines of day H, then continue the chain (train, generate H)."""
    from varro.errors import UsageProblem
    from workers.operations import override

    rt = runtime_for(cfg)
    try:
        result = override(rt, cfg.ns, prediction_date, headlines_date, force=force)
    except UsageProblem as exc:
        raise click.UsageError(str(exc)) from None
    if result.retrain_needed:
        console.print(
            f"[yellow]{prediction_date} was already trained on an earlier ranking; the new ranking "
            "is recorded but not trained on: add --force to re-train on it[/]"
        )
    _project(rt, cfg.ns)
    _print_report(rt, cfg.ns)
    if result.failures:
        first = result.failures[0]
        console.print(f"[red]override failed:[/] {first.stage} {first.date}: {first.error}")
        sys.exit(1)


@click.command("replay")
@config_options
@click.option("--from", "start", callback=parse_date)
@click.option("--to", "end", callback=parse_date)
@click.option("--into", required=True, callback=parse_ns, help="New namespace to re-execute into.")
def replay_cmd(cfg: VarroConfig, start: str | None, end: str | None, into: str) -> None:
    """Re-execute --ns from its recorded inputs (headlines, seeds, config, base checkpoint) into a new namespace."""
    from varro.errors import UsageProblem
    from workers.operations import fork, replay_dates

    if start and end:
        dates_between(start, end)  # a reversed range is a usage error, not "no recorded days"
    rt = runtime_for(cfg)
    try:
        dates = replay_dates(rt, cfg.ns, start, end)
    except UsageProblem as exc:
        raise click.UsageError(str(exc)) from None
    _with_progress(rt, into, dates, lambda on_day: fork(rt, cfg.ns, into, dates, "sample", on_day=on_day))


@click.command("verify")
@config_options
@click.option("--against", required=True, callback=parse_ns, help="The namespace to compare with --ns.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout instead of the table.")
def verify_cmd(cfg: VarroConfig, against: str, as_json: bool) -> None:
    """Compare every output hash of --ns with --against, day by day and stage by stage.

    A stage both namespaces ran is "=" or DIFF; a stage only one ran is "not run"
    on the other side (nothing to compare, so never a DIFF).

    \b
    Exit codes:
      0  every stage is identical, and both ran the same stages
      1  a stage both ran differs (or a namespace does not exist)
      2  usage error
      3  no stage differs, but some ran on one side only (an unfinished
         replay): the comparison is incomplete
    """
    from workers.operations import compare_outputs

    rt = runtime_for(cfg, read_only=True)
    require_namespace(rt.redis, cfg.ns)
    require_namespace(rt.redis, against)
    rows = compare_outputs(_events(rt, cfg.ns), _events(rt, against))
    differ = [r for r in rows if r.verdict == "differ"]
    one_sided = [r for r in rows if r.verdict == "not run"]
    code = 1 if differ else 3 if one_sided else 0
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ns": cfg.ns,
                    "against": against,
                    "identical": code == 0,
                    "first_difference": None if not differ else {"date": differ[0].date, "stage": differ[0].stage},
                    "one_sided": len(one_sided),
                    "stages": [
                        {"date": r.date, "stage": r.stage, cfg.ns: r.mine, against: r.theirs, "verdict": r.verdict}
                        for r in rows
                    ],
                    "exit_code": code,
                },
                indent=1,
            )
        )
        sys.exit(code)
    table = Table("date", "stage", cfg.ns, against, "")
    marks = {"same": "=", "differ": "[red]DIFF[/]", "not run": "[yellow]not run[/]"}
    for r in rows:
        table.add_row(r.date, r.stage, (r.mine or "not run")[:16], (r.theirs or "not run")[:16], marks[r.verdict])
    console.print(table)
    if differ:
        console.print(f"[red]different[/]: first difference at {differ[0].date} {differ[0].stage}")
    elif one_sided:
        first = one_sided[0]
        console.print(
            f"[yellow]incomplete[/]: identical where both ran ({len(rows) - len(one_sided)} outputs), but "
            f"{len(one_sided)} stage(s) ran on one side only, first {first.date} {first.stage}"
        )
    else:
        console.print(f"[green]identical[/]: {len(rows)} outputs")
    sys.exit(code)


@click.command("rebuild")
@config_options
def rebuild_cmd(cfg: VarroConfig) -> None:
    """Rebuild every projection file of --ns from the event log (and the checkpoint links from the store)."""
    from events.ids import sha256_hex
    from events.schema import EpochTrained
    from varro.artifacts import ArtifactError
    from varro.checkpoints import CheckpointError, publish_all
    from varro.projections import project, write_projections
    from varro.stores import StoreUnavailable

    rt = runtime_for(cfg)
    require_namespace(rt.redis, cfg.ns)  # no empty projections for a mistyped namespace
    events = _events(rt, cfg.ns)
    files = project(events, cfg.ns)
    write_projections(files, cfg.data_path, cfg.ns)
    trained = [e for e in events if isinstance(e, EpochTrained)]
    try:
        for event in {e.date: e for e in trained}.values():  # the ones publish_all links (latest per date)
            rt.artifacts.materialise(event.checkpoint, cfg.data_path)  # from a bucket: fetched, verified
        links = publish_all(trained, cfg.data_path, cfg.ns)
    except (CheckpointError, ArtifactError, StoreUnavailable) as exc:
        # a log restored without its checkpoints, or a bucket that does not answer: the files are still rebuilt
        raise click.ClickException(
            f"rebuilt {len(files)} files for {cfg.ns}, but not its checkpoint links: {exc}"
        ) from None
    digest = sha256_hex(b"".join(name.encode() + b"\0" + files[name] for name in sorted(files)))
    console.print(
        f"rebuilt {len(files)} files and {links} dated checkpoint links for {cfg.ns} under "
        f"{cfg.data_path} (content hash {digest[:16]})"
    )


@click.command("status")
@config_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout instead of the tables.")
def status_cmd(cfg: VarroConfig, as_json: bool) -> None:
    """Days x stages grid, queue depths, workers and dead letters. Reads only: it creates no
    directory, starts no server over nothing, and an unknown namespace is an error.

    \b
    Exit codes (for monitoring):
      0  nothing needs attention
      1  error: no such namespace, data directory or server
      2  usage error
      3  a day failed or stalled, or the namespace has dead letters
    """
    from workers.operations import STAGES, namespace_status, needs_attention

    rt = runtime_for(cfg, read_only=True)
    require_namespace(rt.redis, cfg.ns)
    status = namespace_status(rt, cfg.ns)
    attention = needs_attention(status)
    code = 3 if attention else 0
    if as_json:
        click.echo(json.dumps(_status_json(status, attention, code), indent=1))
        sys.exit(code)
    marks = {
        "done": "[green]done[/]",
        "missing": "[dim]missing[/]",
        "failed": "[red]failed[/]",
        "running": "[yellow]running[/]",
        "stalled": "[red]stalled[/]",
    }
    table = Table("date", *STAGES, "day", title=f"namespace {cfg.ns}")
    for date in sorted(status.grid):
        row = status.grid[date]
        cells = (marks.get(row.get(s, "missing"), row.get(s, "")) for s in STAGES)
        table.add_row(date, *cells, status.states[date])
    console.print(table)
    for name, count in status.queued.items():
        console.print(f"queue {name}: {count} waiting")
    console.print(
        f"workers: {len(status.workers)}" + "".join(f"\n  {name} ({state})" for name, state in status.workers)
    )
    dead = status.dead_letters
    console.print(f"dead letters: {len(dead)}" + "".join(f"\n  {d.entry_id}: {d.reason}" for d in dead))
    if status.failed:
        console.print(
            "failed jobs (RQ failed registry):"
            + "".join(f"\n  {f.stage} {f.date} ({f.job_id}): {f.error}" for f in status.failed)
        )
    if status.stranded:
        console.print(
            "roll-outs with no next-day headlines (rank them with `varro override`): " + ", ".join(status.stranded)
        )
    if status.foreign:
        console.print(f"foreign stream entries skipped (not written by Varro): {status.foreign}")
    if attention:
        console.print(f"[red]needs attention[/] (exit 3): {'; '.join(attention)}")
    sys.exit(code)


def _status_json(status: NamespaceStatus, attention: list[str], code: int) -> dict[str, Any]:
    return {
        "ns": status.ns,
        "days": [
            {"date": date, "state": status.states[date], "stages": status.grid[date]} for date in sorted(status.grid)
        ],
        "queued": status.queued,
        "workers": [{"name": name, "state": state} for name, state in status.workers],
        "dead_letters": [
            {"entry_id": d.entry_id, "reason": d.reason, "deliveries": d.deliveries, "failed_at": d.failed_at}
            for d in status.dead_letters
        ],
        "failed_jobs": [
            {"job_id": f.job_id, "stage": f.stage, "date": f.date, "error": f.error} for f in status.failed
        ],
        "stranded": status.stranded,
        "foreign": status.foreign,
        "attention": attention,
        "exit_code": code,
    }


@click.command("namespaces")
@config_options
@click.option("--json", "as_json", is_flag=True, help="A JSON list on stdout instead of the table.")
def namespaces_cmd(cfg: VarroConfig, as_json: bool) -> None:
    """List the namespaces recorded on the server, with their event counts and date span."""
    from workers.operations import namespace_summaries

    rt = runtime_for(cfg, read_only=True)
    found = namespace_summaries(rt)
    if as_json:
        click.echo(json.dumps([_summary_json(s) for s in found], indent=1))
        return
    if not found:
        console.print("no namespaces recorded")
        return
    table = Table("namespace", "events", "first date", "last date")
    for s in found:
        table.add_row(s.ns, str(s.events), s.first_date or "-", s.last_date or "-")
    console.print(table)


def _summary_json(summary: NamespaceSummary) -> dict[str, Any]:
    return {
        "ns": summary.ns,
        "events": summary.events,
        "first_date": summary.first_date,
        "last_date": summary.last_date,
    }


@click.command("lineage")
@config_options
@click.argument("checkpoint")
@click.option("--json", "as_json", is_flag=True, help="The chain as a JSON list (newest first) on stdout.")
def lineage_cmd(cfg: VarroConfig, checkpoint: str, as_json: bool) -> None:
    """The chain of parent checkpoints of CHECKPOINT (a sha256 or prefix) and the data each was trained on."""
    import msgspec

    from varro.lineage import LineageError, lineage

    rt = runtime_for(cfg, read_only=True)
    require_namespace(rt.redis, cfg.ns)
    try:
        steps = lineage(_events(rt, cfg.ns), checkpoint)
    except LineageError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(steps), indent=1).decode())
        return
    table = Table(
        "trained on",
        "checkpoint",
        "parent",
        "ranked event",
        "roll-outs event",
        "variant",
        "steps",
        "improvement",
        title=f"lineage of {checkpoint} in {cfg.ns} (newest first)",
    )
    for step in steps:
        table.add_row(
            step.date + (" (forced)" if step.forced else ""),
            step.checkpoint_sha256[:16],
            step.parent_sha256[:16],
            step.ranked_event_id[:16],
            step.rollouts_event_id[:16],
            f"{step.variant}/{step.pi_old}",
            str(step.metrics.steps),
            f"{step.metrics.improvement:+.4f}",
        )
    console.print(table)
    if steps:
        console.print(f"base model: {steps[-1].base_model} ({steps[-1].parent_sha256[:16]})")


@click.command("worker")
@config_options
@click.argument("role", type=click.Choice(["model", "fetch"]))
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
def worker_cmd(cfg: VarroConfig, role: str, burst: bool) -> None:
    """Run a stage worker: `model` (generate/rank/train, holds the model) or `fetch` (light, forking)."""
    from events.connection import connect
    from workers.dispatcher import FETCH_QUEUE, MODEL_QUEUE
    from workers.model_worker import FetchWorker, ModelWorker
    from workers.queues import queue

    worker: ModelWorker | FetchWorker
    if role == "model":
        rt = runtime_for(cfg)  # the model worker keeps this runtime (and its model) across jobs
        worker = ModelWorker([queue(MODEL_QUEUE, rt.redis)], connection=rt.redis)
    else:
        from workers.runtime import set_default_config

        set_default_config(cfg)  # no runtime here: each forked horse builds its own from this config
        redis = connect(cfg.redis_url, cfg.data_path)
        worker = FetchWorker([queue(FETCH_QUEUE, redis)], connection=redis)
    worker.work(burst=burst, with_scheduler=True)


@click.command("dispatcher")
@config_options
@click.option("--all-ns", is_flag=True, help="Dispatch every namespace, not only --ns.")
def dispatcher_cmd(cfg: VarroConfig, all_ns: bool) -> None:
    """Consume the event streams and enqueue each next job."""
    import socket

    from events.connection import connect
    from workers.dispatcher import Dispatcher

    redis = connect(cfg.redis_url, cfg.data_path)
    Dispatcher(redis, cfg, name=f"{socket.gethostname()}-{id(redis):x}").run(None if all_ns else [cfg.ns])


@click.command("scheduler")
@config_options
def scheduler_cmd(cfg: VarroConfig) -> None:
    """Request each day for --ns at `workers.cron` (UTC)."""
    from events.connection import connect
    from varro.errors import UsageProblem
    from workers.schedule import DailySchedule

    try:
        schedule = DailySchedule(connect(cfg.redis_url, cfg.data_path), cfg)
    except (ValueError, UsageProblem) as exc:
        raise click.UsageError(str(exc)) from None
    console.print(f"scheduling {cfg.ns} at '{cfg.workers.cron}' UTC (source {cfg.workers.daily_source})")
    try:
        schedule.run()
    except KeyboardInterrupt:
        console.print("scheduler stopped")


@click.command("dashboard")
@config_options
@click.option("--port", type=int, default=9181, show_default=True)
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
def dashboard_cmd(cfg: VarroConfig, port: int, bind: str) -> None:
    """Serve rq-dashboard for the Redis in use (jobs shown through Varro's JSON serializer)."""
    import os
    import subprocess

    from events.connection import connect

    connection = connect(cfg.redis_url, cfg.data_path)
    url = cfg.redis_url or f"unix://{connection.connection_pool.connection_kwargs['path']}"
    # the URL may hold a password: the environment, unlike the command line, is not shown by `ps`
    env = {**os.environ, "RQ_DASHBOARD_REDIS_URL": url}
    args = [sys.executable, "-m", "rq_dashboard", "--json", "--port", str(port), "--bind", bind]
    sys.exit(subprocess.call(args, env=env))


commands = [
    run_cmd,
    daily_cmd,
    backfill_cmd,
    override_cmd,
    replay_cmd,
    verify_cmd,
    rebuild_cmd,
    status_cmd,
    namespaces_cmd,
    lineage_cmd,
    worker_cmd,
    dispatcher_cmd,
    scheduler_cmd,
    dashboard_cmd,
]
