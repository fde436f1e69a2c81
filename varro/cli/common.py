"""Options and set-up shared by the command modules: config layering and errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from events.ids import validate_date
from varro.config import ConfigError, VarroConfig, load_config


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
    """Click callback: a YYYY-MM-DD option, or a usage error that names it."""
    if value is None:
        return None
    try:
        return validate_date(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def runtime_for(cfg: VarroConfig):
    """Connect (starting the embedded server if needed) and install the process runtime."""
    from workers.runtime import Runtime, set_runtime

    rt = Runtime.create(cfg)
    set_runtime(rt)
    return rt
