"""The `varro` command. The outermost layer: the only part of varro/ that may
touch Redis or RQ. Each command group lives in its own module and is
registered here by name, so command modules stay small and independent."""

from __future__ import annotations

import importlib
import os
from typing import Any

import click

import varro

# module name under varro.cli -> attribute holding the click command/group
_COMMANDS = (
    ("events_cmd", "events"),
    ("server_cmd", "server"),
    ("doctor_cmd", "doctor"),
    ("headlines_cmd", "headlines"),
    ("model_cmd", "model"),
    ("pipeline_cmd", "commands"),
    ("eval_cmd", "commands"),
    ("report_cmd", "commands"),
    ("econ_cmd", "commands"),
)


class _VarroGroup(click.Group):
    """Turns a lost or refused Redis connection into one line, with any password redacted."""

    def invoke(self, ctx: click.Context) -> Any:
        import redis

        try:
            return super().invoke(ctx)
        except redis.ConnectionError as exc:  # AuthenticationError included
            from events.connection import redact

            url = os.environ.get("REDIS_URL")
            message = redact(str(exc), url)
            where = f" at {redact(url)}" if url else ""
            raise click.ClickException(f"cannot reach Redis{where}: {message}") from None


@click.group(cls=_VarroGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(varro.__version__, prog_name="varro")
@click.option(
    "--log-level",
    envvar="VARRO_LOG_LEVEL",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log lines (structlog: pretty on a terminal, JSON otherwise) at this level and above.",
)
def main(log_level: str) -> None:
    """Varro: event-sourced daily GSPO training on financial news."""
    from varro.logging import configure_logging

    configure_logging(log_level)


def _register() -> None:
    for module_name, attr in _COMMANDS:
        try:
            module = importlib.import_module(f"varro.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"varro.cli.{module_name}":
                continue
            raise
        obj = getattr(module, attr)
        for command in obj if isinstance(obj, (list, tuple)) else (obj,):
            main.add_command(command)


_register()
