"""`varro report`: the per-day tables, computed from the log alone, for one or several namespaces."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from varro.cli.common import config_options, parse_date, runtime_for
from varro.config import VarroConfig


@click.command("report")
@config_options
@click.option("--namespaces", "names", help="Comma-separated namespaces side by side (default: --ns).")
@click.option("--from", "start", callback=parse_date, help="First day to show.")
@click.option("--to", "end", callback=parse_date, help="Last day to show.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "markdown", "csv", "json"]), default="table", show_default=True
)
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), help="Also write PNG charts into DIR.")
@click.option(
    "--tensorboard",
    "tb_dir",
    type=click.Path(file_okay=False),
    help="Also write TensorBoard event files into DIR (one run per namespace).",
)
def report_cmd(
    cfg: VarroConfig,
    names: str | None,
    start: str | None,
    end: str | None,
    fmt: str,
    plot_dir: str | None,
    tb_dir: str | None,
) -> None:
    """Per day: headlines, roll-outs, rewards, judge signals, the epoch, and the held-out win rate."""
    from events.ids import validate_ns
    from events.store import EventStore
    from varro import report
    from workers.operations import events_of

    namespaces = [n.strip() for n in (names or cfg.ns).split(",") if n.strip()]
    for ns in namespaces:
        try:
            validate_ns(ns)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--namespaces") from None
    if start and end and start > end:
        raise click.BadParameter(f"--from {start} is after --to {end}", param_hint="--from")
    rt = runtime_for(cfg)
    unknown = [ns for ns in namespaces if not EventStore(rt.redis, ns).count()]
    if unknown:
        raise click.UsageError(f"no events in namespace(s) {', '.join(unknown)}")
    rows = [
        r
        for r in report.report_rows({ns: events_of(rt, ns) for ns in namespaces})
        if (start is None or r.date >= start) and (end is None or r.date <= end)
    ]
    title = f"Varro report: {', '.join(namespaces)}"
    if fmt == "table":
        console = Console() if sys.stdout.isatty() else Console(width=400)
        console.print(report.render_table(rows, title=title, columns=report.ALL_COLUMNS))
    elif fmt == "markdown":
        click.echo(report.summary_markdown(rows, title=title, columns=report.ALL_COLUMNS), nl=False)
    elif fmt == "csv":
        click.echo(report.summary_csv(rows), nl=False)
    else:
        click.echo(report.summary_json(rows), nl=False)
    err = Console(stderr=True)
    if plot_dir:
        from varro.plots import plot_report

        charts = plot_report(rows, Path(plot_dir))
        err.print(f"{len(charts)} chart(s) in {plot_dir}: " + ", ".join(c.path.name for c in charts))
    if tb_dir:
        from varro.tensorboard import write_scalars

        runs = write_scalars(rows, Path(tb_dir))
        err.print(f"TensorBoard runs in {tb_dir}: " + ", ".join(p.name for p in runs))


commands = [report_cmd]
