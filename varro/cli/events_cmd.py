"""`varro events`: read, check, back up and restore a namespace's event log."""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

import click
import msgspec
import redis

from events.connection import NoServer, connect, connect_existing, redact
from events.errors import EventError
from events.schema import (
    EVENT_TYPES,
    AnyEvent,
    DailyRunRequested,
    EpochTrained,
    HeadlinesFetched,
    Ranked,
    RolloutsGenerated,
)
from events.store import EventStore, StoredEvent
from varro.artifacts import atomic_write
from varro.cli.common import config_options, require_namespace
from varro.config import ConfigError, VarroConfig, load_config


def open_redis(cfg: VarroConfig, *, create: bool = False) -> redis.Redis:
    """A checked client. Only `create` (a restore) may start a server over an empty data directory:
    reading never creates (see events.connection.connect_existing)."""
    try:
        client = (connect if create else connect_existing)(cfg.redis_url, cfg.data_path)
        client.ping()
        return client
    except NoServer as exc:
        raise click.ClickException(str(exc)) from None
    except (redis.RedisError, EventError, OSError) as exc:
        where = redact(cfg.redis_url) if cfg.redis_url else "embedded"
        raise click.ClickException(f"cannot reach Redis ({where}): {redact(str(exc), cfg.redis_url)}") from None


def open_store(cfg: VarroConfig) -> EventStore:
    """The store of an existing namespace: an unknown one is an error (exit 1), not an empty log."""
    client = open_redis(cfg)
    require_namespace(client, cfg.ns)
    return EventStore(client, cfg.ns)


def event_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Typed event-log errors become one-line CLI errors, not tracebacks."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EventError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None

    return wrapper


def foreign_note(store: EventStore) -> str | None:
    """One line about the entries a read skipped because Varro did not write them (None if none)."""
    seen = store.foreign_seen
    if not seen:
        return None
    shown = ", ".join(seen[:5]) + (", ..." if len(seen) > 5 else "")
    return (
        f"skipped {len(seen)} foreign entr{'y' if len(seen) == 1 else 'ies'} of namespace {store.ns!r} "
        f"(not written by Varro; the dispatcher dead-letters them): {shown}"
    )


def summary(event: AnyEvent) -> str:
    """A few words that tell one event from its neighbours in a listing."""
    parts: list[str] = []
    if isinstance(event, DailyRunRequested):
        parts = [f"trigger={event.trigger}", f"seed={event.seed}"]
    elif isinstance(event, HeadlinesFetched):
        parts = [f"headlines={len(event.headlines)}", f"sources={len(event.sources)}"]
    elif isinstance(event, RolloutsGenerated):
        parts = [f"groups={len(event.groups)}", f"checkpoint={event.checkpoint.sha256[:12]}"]
    elif isinstance(event, Ranked):
        parts = [f"groups={len(event.groups)}", f"outcome={event.outcome_date}", f"avg_reward={event.stats.avg:.3f}"]
    elif isinstance(event, EpochTrained):
        parts = [
            f"steps={event.metrics.steps}",
            f"loss={event.metrics.loss:.4g}",
            f"checkpoint={event.checkpoint.sha256[:12]}",
        ]
    if getattr(event, "forced", False):
        parts.append("forced")
    return " ".join(parts)


def line(stored: StoredEvent) -> str:
    e = stored.event
    return f"{stored.entry_id:<16} {e.date}  {type(e).__name__:<18} {e.event_id}  {summary(e)}".rstrip()


def pretty(event: AnyEvent) -> str:
    return msgspec.json.format(msgspec.json.encode(event), indent=2).decode()


@click.group()
def events() -> None:
    """Read, verify, export and import a namespace's event log."""


@events.command()
@config_options
@click.option("--type", "event_type", type=click.Choice(sorted(EVENT_TYPES)), default=None, help="Only this type.")
@click.option("--date", default=None, help="Only this logical date (YYYY-MM-DD).")
@click.option(
    "-n",
    "--lines",
    "n",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="How many of the latest matching events to show.",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they are appended.")
@event_errors
def tail(cfg: VarroConfig, event_type: str | None, date: str | None, n: int, follow: bool) -> None:
    """Show the latest events, oldest first (one line each). Ctrl-C at any point exits 0."""
    with contextlib.suppress(KeyboardInterrupt):
        _tail(open_store(cfg), event_type, date, n, follow)


def _tail(store: EventStore, event_type: str | None, date: str | None, n: int, follow: bool) -> None:
    types = None if event_type is None else [event_type]
    dates = None if date is None else [date]
    until = store.last_entry_id() or "0-0"  # follow resumes exactly after what is listed
    latest: Iterable[StoredEvent]
    if types is None and dates is None:
        latest = store.last(n, end=until)
    else:
        latest = collections.deque(store.read(end=until, types=types, dates=dates), maxlen=n) if n else ()
    for stored in latest:
        click.echo(line(stored))
    if note := foreign_note(store):
        click.echo(note, err=True)
    if not follow:
        return
    for stored in store.follow(last_id=until, block_ms=1000):
        if (types is None or type(stored.event).__name__ in types) and (dates is None or stored.event.date in dates):
            click.echo(line(stored))


def _selection(event_id: str | None, event_type: str | None, date: str | None) -> str | tuple[str, str]:
    """What `show` names: an event id, or (type, date); exactly one of the two, else a usage error."""
    if event_id is not None and (event_type is None or date is None):
        return event_id
    if event_id is None and event_type is not None and date is not None:
        return event_type, date
    raise click.UsageError("give either EVENT_ID or both --type and --date")


@events.command()
@click.argument("event_id", required=False)
@config_options
@click.option("--type", "event_type", type=click.Choice(sorted(EVENT_TYPES)), default=None)
@click.option("--date", default=None, help="With --type: every event of that type and date.")
@event_errors
def show(event_id: str | None, cfg: VarroConfig, event_type: str | None, date: str | None) -> None:
    """Print one event (by EVENT_ID) or all events of --type on --date as JSON."""
    wanted = _selection(event_id, event_type, date)
    store = open_store(cfg)
    if isinstance(wanted, str):
        event = store.get(wanted)
        if event is None:
            raise click.ClickException(f"no event {wanted} in namespace {store.ns!r}")
        found = [event]
    else:
        found = store.all_for(*wanted)
        if not found:
            raise click.ClickException(f"no {wanted[0]} for {wanted[1]} in namespace {store.ns!r}")
    for event in found:
        click.echo(pretty(event))


@events.command()
@config_options
@event_errors
def verify(cfg: VarroConfig) -> None:
    """Walk the hash chain; exit 1 and name the first broken link if it is broken."""
    store = open_store(cfg)
    report = store.verify()
    if report.foreign:
        shown = ", ".join(report.foreign[:5]) + (", ..." if len(report.foreign) > 5 else "")
        click.echo(f"foreign: {len(report.foreign)} entries not written by Varro (outside the chain): {shown}")
    if report.ok:
        click.echo(f"ok: namespace {store.ns!r}, {report.checked} entries, chain intact")
        return
    click.echo(
        f"BROKEN: namespace {store.ns!r} at entry {report.first_broken} "
        f"(after {report.checked} good entries): {report.reason}"
    )
    sys.exit(1)


@events.command()
@config_options
@click.option("--dry-run", is_flag=True, help="List the foreign entries; move nothing.")
@event_errors
def quarantine(cfg: VarroConfig, dry_run: bool) -> None:
    """Move the stream entries Varro did not write into the namespace's quarantine stream."""
    store = open_store(cfg)
    moved = store.quarantine_foreign(dry_run=dry_run)
    verb = "would move" if dry_run else "moved"
    click.echo(f"{verb} {len(moved)} foreign entries of namespace {store.ns!r} to varro:{{{store.ns}}}:quarantine")
    for entry in moved:
        click.echo(f"  {entry}")


@events.command(name="export")
@config_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (default: standard output).",
)
@event_errors
def export_cmd(cfg: VarroConfig, output: Path | None) -> None:
    """Write the namespace as JSONL (one entry per line): a readable, diffable backup."""
    store = open_store(cfg)
    if output is None:
        n = store.export_jsonl(sys.stdout)
    else:
        buffer = io.StringIO()
        n = store.export_jsonl(buffer)
        atomic_write(output, buffer.getvalue().encode("utf-8"))  # a crash leaves the old backup whole
    click.echo(f"exported {n} events from namespace {store.ns!r}", err=True)
    if note := foreign_note(store):
        click.echo(note + "; left out of the export", err=True)


@events.command(name="import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--ns", required=True, help="The namespace the export was taken from (empty now): a restore.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--data-dir", help="Data directory. Default: config `data_dir` (~/.varro).")
@click.option("--redis-url", help="Redis/Valkey URL. Default: $REDIS_URL, else the embedded server.")
@event_errors
def import_cmd(file: TextIO, ns: str, config_path: str | None, data_dir: str | None, redis_url: str | None) -> None:
    """Restore a JSONL export into an empty namespace; the chain verifies afterwards."""
    try:
        cfg = load_config(config_path, overrides={"ns": ns, "data_dir": data_dir, "redis_url": redis_url})
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    store = EventStore(open_redis(cfg, create=True), cfg.ns)
    n = store.import_jsonl(file)
    report = store.verify()
    if not report.ok:
        raise click.ClickException(f"imported {n} events but the chain does not verify: {report.reason}")
    click.echo(f"imported {n} events into namespace {store.ns!r}; chain verified")
