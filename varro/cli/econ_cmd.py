"""`varro econ`: hit rates and a paper P&L of the predictions against daily closes."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from varro.cli.common import config_options, parse_date, runtime_for
from varro.config import VarroConfig

SAMPLE_PRICES = Path(__file__).resolve().parents[1] / "data" / "sample_prices.csv"


@click.command("econ")
@config_options
@click.option(
    "--prices",
    required=True,
    help="CSV of daily closes (date,symbol,close), or 'sample' for the bundled SYNTHETIC demo prices.",
)
@click.option("--from", "start", callback=parse_date, help="First prediction day.")
@click.option("--to", "end", callback=parse_date, help="Last prediction day.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def econ_cmd(cfg: VarroConfig, prices: str, start: str | None, end: str | None, as_json: bool) -> None:
    """Parse each prediction's assets, direction and horizon; score it against the closes that followed."""
    import msgspec

    from events.store import EventStore
    from varro.econ import PriceFileError, Prices, evaluate
    from workers.operations import events_of

    path = SAMPLE_PRICES if prices == "sample" else Path(prices)
    if not path.is_file():
        raise click.BadParameter(f"no such file: {path}", param_hint="--prices")
    if start and end and start > end:
        raise click.BadParameter(f"--from {start} is after --to {end}", param_hint="--from")
    try:
        table = Prices.read(path.read_text(encoding="utf-8"), origin=str(path))
    except (PriceFileError, UnicodeDecodeError) as exc:
        raise click.UsageError(str(exc)) from None
    rt = runtime_for(cfg)
    if not EventStore(rt.redis, cfg.ns).count():
        raise click.UsageError(f"no events in namespace {cfg.ns!r}")
    report = evaluate(events_of(rt, cfg.ns), table, start=start, end=end)
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
        return
    console = Console() if sys.stdout.isatty() else Console(width=160)
    if prices == "sample":
        console.print("[yellow]prices: the bundled SYNTHETIC demo closes (random walks), not market data[/]")
    console.print(
        f"{report.predictions} predictions, {report.parsed} parsed ({report.parse_rate:.1%}), "
        f"{report.not_yet_due} not yet due, {report.scored} scored over {report.days} day(s)"
    )
    if report.unparsed:
        console.print("not parsed: " + ", ".join(f"{why} {n}" for why, n in report.unparsed.items()))
    t = Table("horizon", "scored", "hit rate", "always long hit rate", title=f"direction hits in {cfg.ns}")
    for h in report.by_horizon:
        t.add_row(h.bucket, str(h.scored), f"{h.hit_rate:.3f}", f"{h.long_hit_rate:.3f}")
    console.print(t)
    for label, est in (("paper P&L (mean daily return)", report.pnl), ("always long", report.always_long)):
        if est is not None:
            console.print(
                f"{label}: {est.value:+.4%} [95% CI {est.low:+.4%}, {est.high:+.4%}] over {est.clusters} days"
            )
    console.print("coin flip: hit rate 0.500, P&L +0.0000% (expectation)")


commands = [econ_cmd]
