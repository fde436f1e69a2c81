"""`varro headlines fetch|import|show`: record a day's headlines and look at them."""

from __future__ import annotations

import json
from pathlib import Path

import click
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table
from rich.text import Text

from events.ids import today_utc
from events.schema import HeadlinesFetched, SourceReport
from varro.cli.common import config_options, parse_date
from varro.config import VarroConfig
from varro.headlines.collect import SOURCE_KINDS, NoHeadlinesError, PastDateError, file_dates
from varro.headlines.feeds import FeedListError, load_feeds
from varro.headlines.items import SourceRead
from varro.headlines.normalize import display_safe

console = Console()


def _context(cfg: VarroConfig):
    from events.connection import connect
    from events.store import EventStore
    from jobs.context import JobContext
    from varro.stores import open_store

    redis = connect(cfg.redis_url, cfg.data_path)
    return JobContext(cfg=cfg, store=EventStore(redis, cfg.ns), artifacts=open_store(cfg), models=None)


@click.group("headlines")
def headlines() -> None:
    """Fetch, import and show a day's headlines (the `HeadlinesFetched` events)."""


@headlines.command("fetch")
@config_options
@click.option("--date", callback=parse_date, help="Logical day YYYY-MM-DD. Default: today (UTC).")
@click.option(
    "--source",
    type=click.Choice(SOURCE_KINDS),
    help="Where headlines come from. Default: files when --file is given, else rss.",
)
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A JSON/JSONL/CSV headline file (repeatable); implies --source files.",
)
@click.option("--force", is_flag=True, help="Fetch again even if the day is recorded (a new, marked event).")
def fetch_cmd(cfg: VarroConfig, date: str | None, source: str | None, files: tuple[Path, ...], force: bool) -> None:
    """Record one day's headlines, with progress per source and a summary table."""
    source = source or ("files" if files else "rss")
    if files and source != "files":
        raise click.UsageError("--file is only used with --source files")
    if source == "files" and not files:
        raise click.UsageError("--source files needs at least one --file PATH")
    _fetch_day(cfg, date or today_utc(), source, files, force)


@headlines.command("import")
@config_options
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--date", callback=parse_date, help="Record only this day. Default: every day the files hold.")
@click.option("--force", is_flag=True, help="Record again days that are already recorded (new, marked events).")
def import_cmd(cfg: VarroConfig, paths: tuple[Path, ...], date: str | None, force: bool) -> None:
    """Record headlines from JSON/JSONL/CSV files (offline days and backfills)."""
    try:
        dates = [date] if date else file_dates(paths, cfg.headlines)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if not dates:
        raise click.ClickException("the files hold no dated headlines: pass --date")
    for day in dates:
        _fetch_day(cfg, day, "files", paths, force)


@headlines.command("show")
@config_options
@click.option("--date", callback=parse_date, required=True, help="Logical day YYYY-MM-DD.")
@click.option("--jsonl", is_flag=True, help="Print one JSON headline per line instead of a table.")
def show_cmd(cfg: VarroConfig, date: str, jsonl: bool) -> None:
    """Print the headlines recorded for a day (the latest event when a day was re-fetched)."""
    store = _context(cfg).store
    event = store.latest("HeadlinesFetched", date)
    if event is None:
        raise click.ClickException(f"no headlines recorded for {date} in namespace {cfg.ns!r}")
    if jsonl:
        for headline in event.headlines:
            click.echo(json.dumps(msgspec.to_builtins(headline), ensure_ascii=False))
        return
    versions = len(store.all_for("HeadlinesFetched", date))
    table = Table(
        "#",
        "source",
        "published",
        "category",
        "headline",
        title=f"{date} · {len(event.headlines)} headlines · {event.source_kind}"
        f"{' · forced' if event.forced else ''} · event {event.event_id}"
        f"{f' (latest of {versions})' if versions > 1 else ''}",
    )
    for n, headline in enumerate(event.headlines, 1):
        # Text, not markup: a headline's "[red]" or ESC must reach the terminal as characters, not commands.
        table.add_row(
            str(n),
            Text(display_safe(headline.source)),
            (headline.published or "")[11:16],
            headline.category,
            Text(display_safe(headline.text)),
        )
    console.print(table)


def _fetch_day(cfg: VarroConfig, date: str, source: str, files: tuple[Path, ...], force: bool) -> None:
    from jobs.fetch import fetch_headlines

    try:
        total = len(load_feeds(cfg.headlines.feeds_file)) if source == "rss" else (len(files) or 1)
    except FeedListError as exc:
        raise click.ClickException(str(exc)) from None
    ctx = _context(cfg)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"{source} {date}", total=total)

        def on_source(read: SourceRead) -> None:
            mark = {"ok": "[green]ok[/]", "not_modified": "[cyan]not modified[/]"}.get(read.status, "[red]failed[/]")
            detail = f" — {read.error}" if read.error else f" — {len(read.items)} items"
            if read.warnings:
                detail += f" (warning: {'; '.join(read.warnings)})"
            if read.final_url:
                detail += f" (from {read.final_url})"
            # what a server sent is text, never markup or terminal escapes
            line = f"  {escape(display_safe(read.name))}: {mark}{escape(display_safe(detail))}"
            progress.console.print(line, highlight=False)
            progress.advance(task)

        try:
            appended = fetch_headlines(ctx, date, source=source, paths=files, force=force, on_source=on_source)
        except PastDateError as exc:
            raise click.UsageError(str(exc)) from None
        except NoHeadlinesError as exc:
            console.print(summary_table(exc.reports, f"{date}: nothing recorded"))
            raise click.ClickException(str(exc)) from None
        except (FeedListError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
    event: HeadlinesFetched = appended.event
    if appended.created:
        console.print(
            summary_table(
                event.sources, f"{date}: {len(event.headlines)} headlines recorded{' (forced)' if event.forced else ''}"
            )
        )
    else:
        console.print(
            f"{date} is already recorded ({len(event.headlines)} headlines, event {event.event_id}); "
            "nothing fetched. Use --force to fetch again."
        )


def summary_table(reports: list[SourceReport], title: str) -> Table:
    """Per source: fetched / kept / dropped by the filter / duplicates / skipped / warnings / error.

    Reasons and warnings quote what a server or file sent, so they are shown as text, never as markup.
    """
    table = Table(
        "source",
        "status",
        "fetched",
        "kept",
        "dropped by filter",
        "duplicates",
        "skipped",
        "warnings",
        "error",
        title=title,
    )
    for r in reports:
        skipped = ", ".join(f"{reason} ×{n}" for reason, n in r.skipped.items())
        warnings = "; ".join(f"{note} ×{n}" if n > 1 else note for note, n in r.warnings.items())
        source = f"{r.source} (from {r.final_url})" if r.final_url else r.source
        table.add_row(
            Text(display_safe(source)),
            r.status,
            str(r.fetched),
            str(r.kept),
            str(r.dropped_by_filter),
            str(r.duplicates),
            Text(display_safe(skipped)),
            Text(display_safe(warnings)),
            Text(display_safe(r.error or "")),
        )
    totals = [sum(getattr(r, f) for r in reports) for f in ("fetched", "kept", "dropped_by_filter", "duplicates")]
    table.add_row(
        "[b]total[/]",
        f"{sum(r.status == 'failed' for r in reports)} failed",
        *map(str, totals),
        str(sum(sum(r.skipped.values()) for r in reports)),
        "",
        "",
    )
    return table
