"""Evaluation commands: `varro panel` (freeze, list, show) and `varro ab`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from varro.cli.common import config_options, runtime_for
from varro.config import VarroConfig

if TYPE_CHECKING:
    from events.schema import Evaluated

console = Console() if sys.stdout.isatty() else Console(width=160)


def _usage(exc: Exception) -> click.UsageError:
    return click.UsageError(str(exc))


@click.group("panel")
def panel() -> None:
    """Held-out panels: headlines no evaluated checkpoint was trained on, with their next day."""


@panel.command("freeze")
@config_options
@click.option(
    "--source",
    "spec",
    default="log",
    show_default=True,
    help="sample (the bundled days), log (this namespace's fetched days) or a panel JSON file.",
)
def panel_freeze(cfg: VarroConfig, spec: str) -> None:
    """Freeze a panel as an artifact and record it (PanelFrozen); the same panel is recorded once."""
    from varro.errors import VarroError
    from workers.operations import panel_event

    try:
        event = panel_event(runtime_for(cfg), cfg.ns, spec)
    except VarroError as exc:
        raise _usage(exc) from None
    console.print(
        f"panel {event.name}: {event.items} held-out headlines over {len(event.dates)} day(s) "
        f"{event.dates[0]} .. {event.dates[-1]} (hold-out share {event.holdout_share}); "
        f"event {event.event_id[:16]}, artifact {event.artifact.sha256[:16]}"
    )


@panel.command("list")
@config_options
def panel_list(cfg: VarroConfig) -> None:
    """The panels frozen in --ns."""
    from events.schema import PanelFrozen

    rt = runtime_for(cfg)
    table = Table("event", "name", "source", "items", "days", "artifact", title=f"panels in {cfg.ns}")
    for stored in rt.store(cfg.ns).read(types=["PanelFrozen"]):
        e = stored.event
        if not isinstance(e, PanelFrozen):  # read(types=...) gives only these
            continue
        table.add_row(
            e.event_id[:16], e.name, e.source, str(e.items), f"{e.dates[0]} .. {e.dates[-1]}", e.artifact.sha256[:16]
        )
    console.print(table)


@click.command("ab")
@config_options
@click.option(
    "--a",
    "a_ref",
    default="base",
    show_default=True,
    help="Checkpoint A: base, a trained day (YYYY-MM-DD), a sha256 prefix, or a checkpoint directory.",
)
@click.option("--b", "b_ref", required=True, help="Checkpoint B, named like --a.")
@click.option(
    "--panel",
    "panel_spec",
    default="log",
    show_default=True,
    help="sample, log, a panel JSON file, or the id of a frozen panel.",
)
@click.option("--k", type=int, help="Roll-outs per side per panel headline. Default: config eval.k.")
@click.option("--force", is_flag=True, help="Evaluate again as a new, marked event.")
@click.option("--json", "as_json", is_flag=True, help="Print the Evaluated event as JSON.")
def ab_cmd(
    cfg: VarroConfig, a_ref: str, b_ref: str, panel_spec: str, k: int | None, force: bool, as_json: bool
) -> None:
    """Judge checkpoint B head to head against A on a held-out panel (same seeds on both sides)."""
    import msgspec

    from varro.errors import VarroError
    from workers.operations import ab

    if k is not None:
        if k < 1:
            raise click.BadParameter("must be >= 1", param_hint="--k")
        cfg = msgspec.structs.replace(cfg, eval=msgspec.structs.replace(cfg.eval, k=k))
    rt = runtime_for(cfg)
    try:
        event = ab(rt, cfg.ns, a_ref, b_ref, panel_spec, force=force)
    except VarroError as exc:
        raise _usage(exc) from None
    if as_json:
        click.echo(msgspec.json.encode(event).decode())
        return
    render_evaluation(event)


def render_evaluation(event: Evaluated) -> None:
    table = Table("", event.a.label, event.b.label, title=f"A/B on panel {event.panel.sha256[:12]} ({event.judge})")
    for name, attr, fmt in (
        ("checkpoint", "checkpoint", lambda c: c.sha256[:12]),
        ("roll-outs", "rollouts", str),
        ("judge score (unscaled)", "judge_score", lambda v: "—" if v is None else f"{v:.4f}"),
        ("structure score", "structure", lambda v: f"{v:.3f}"),
        ("tokens (mean)", "tokens", lambda v: f"{v:.1f}"),
        ("truncated", "truncated", lambda v: f"{v:.1%}"),
        ("prompt leaked", "leaked", lambda v: f"{v:.1%}"),
        ("degenerate", "degenerate", lambda v: f"{v:.1%}"),
    ):
        table.add_row(name, fmt(getattr(event.a, attr)), fmt(getattr(event.b, attr)))
    console.print(table)
    console.print(
        f"pairs {event.pairs} over {event.headlines} headlines: ties {event.ties}, "
        f"position disagreements {event.order_disagreements}, judge failures {event.judge_failures}"
    )
    from workers.operations import verdict

    console.print(f"[bold]Verdict:[/] {verdict(event)}")


commands = [panel, ab_cmd]
