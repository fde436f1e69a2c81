"""Options and set-up shared by the command modules: config layering and errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from events.ids import MAX_SEED, bounded_date, validate_ns
from varro.config import ConfigError, VarroConfig, load_config

if TYPE_CHECKING:
    from redis import Redis

    from workers.runtime import Runtime


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--config/--ns/--data-dir/--redis-url: the CLI layer on top of file and environment."""

    @click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
    @click.option("--ns", help="Namespace (experiment lineage). Default: config `ns`.")
    @click.option("--data-dir", help="Data directory. Default: config `data_dir` (~/.varro).")
    @click.option("--redis-url", help="Redis/Valkey URL. Default: $REDIS_URL, else the embedded server.")
    @functools.wraps(func)
    def wrapper(
        *args: Any, config_path: str | None, ns: str | None, data_dir: str | None, redis_url: str | None, **kwargs: Any
    ) -> Any:
        try:
            cfg = load_config(config_path, overrides={"ns": ns, "data_dir": data_dir, "redis_url": redis_url})
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        return func(*args, cfg=cfg, **kwargs)

    return wrapper


def parse_date(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback: a YYYY-MM-DD option within `events.ids.bounded_date`'s bounds, or a usage error."""
    if value is None:
        return None
    try:
        return bounded_date(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def parse_ns(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback: a namespace option (--into, --against), checked like --ns."""
    if value is None:
        return None
    try:
        return validate_ns(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


# What a seed may be (events and RQ payloads carry a signed 64-bit integer): see events.ids.MAX_SEED.
SEED = click.IntRange(0, MAX_SEED)


def dates_between(start: str, end: str) -> list[str]:
    """Every day from `start` to `end`; a reversed range is a usage error naming both options."""
    from events.ids import date_range

    if end < start:
        raise click.UsageError(f"--from {start} is after --to {end}: give the earlier day first")
    return date_range(start, end)


def runtime_for(cfg: VarroConfig, *, read_only: bool = False) -> Runtime:
    """Connect and install the process runtime.

    A command that records (the default) first proves the data directory
    writable, then starts the embedded server if needed. A command that only
    reads (`read_only`) never creates: it connects to REDIS_URL or to the data
    directory's existing server, and a data directory that does not exist is an
    error, not a new directory.
    """
    from events.connection import NoServer, connect_existing, redact
    from events.server import ServerError
    from varro.artifacts import DiskWriteError, check_writable
    from workers.runtime import Runtime, set_runtime

    try:
        if read_only:
            rt = Runtime.create(cfg, redis=connect_existing(cfg.redis_url, cfg.data_path))
        else:
            check_writable(cfg.data_path)
            rt = Runtime.create(cfg)
    except NoServer as exc:
        raise click.ClickException(str(exc)) from None
    except DiskWriteError as exc:
        raise click.ClickException(f"data directory {cfg.data_path} is not usable: {exc}") from None
    except ServerError as exc:
        raise click.ClickException(f"embedded server: {redact(str(exc), cfg.redis_url)}") from None
    set_runtime(rt)
    return rt


def require_namespace(redis: Redis, ns: str) -> None:
    """An unknown namespace is an error for a command that reads one (exit 1), never an empty answer."""
    from events.store import EventStore, stream_key

    if not redis.exists(stream_key(ns)):
        known = EventStore.namespaces(redis)
        hint = f"known: {', '.join(known[:10])}" + (", ..." if len(known) > 10 else "") if known else "none recorded"
        raise click.ClickException(f"namespace {ns!r} does not exist ({hint}; `varro namespaces` lists them)")
