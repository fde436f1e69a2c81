"""`varro server`: the embedded Valkey shared by every Varro process on this machine."""

from __future__ import annotations

import sys

import click

from events.connection import redact
from events.errors import EventError
from events.server import EmbeddedServer
from varro.cli.common import config_options
from varro.config import VarroConfig


@click.group()
def server() -> None:
    """Start, stop or inspect the embedded Valkey server (used when REDIS_URL is unset)."""


def _server(cfg: VarroConfig) -> EmbeddedServer:
    if cfg.redis_url:
        note = f"note: REDIS_URL is set ({redact(cfg.redis_url)}); Varro uses it, not the embedded server"
        click.echo(note, err=True)
    return EmbeddedServer(cfg.data_path)


@server.command()
@config_options
def start(cfg: VarroConfig) -> None:
    """Start the server (or find it running) and print its URL; it keeps running after this exits."""
    embedded = _server(cfg)
    try:
        url = embedded.start()
    except EventError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(url)


@server.command()
@config_options
def stop(cfg: VarroConfig) -> None:
    """Shut the server down cleanly (the AOF is flushed first)."""
    embedded = _server(cfg)
    try:
        stopped = embedded.stop()
    except EventError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("stopped" if stopped else "not running")


@server.command()
@config_options
def status(cfg: VarroConfig) -> None:
    """Say whether the server runs, where, and with which persistence; exit 1 if it does not run."""
    st = _server(cfg).status()
    click.echo(f"running:     {'yes' if st.running else 'no'}")
    click.echo(f"url:         {st.url}")
    click.echo(f"data dir:    {st.data_dir / 'valkey'}")
    if st.running:
        click.echo(f"pid:         {st.pid}")
        click.echo(f"version:     {st.version}")
        click.echo(f"persistence: aof={'on' if st.aof else 'off'} appendfsync={st.appendfsync}")
    else:
        sys.exit(1)
