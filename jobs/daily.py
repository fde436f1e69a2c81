"""The trigger for a day: `DailyRunRequested`, the event the whole chain hangs off.

The trigger is itself an idempotent event: its id depends only on namespace and
date, so a manual `varro daily` and the cron firing for the same day (or several
people triggering at once) record one request and therefore one run.
"""

from __future__ import annotations

from events.ids import derive_event_id, validate_date
from events.schema import DailyRunRequested, HeadlineSource
from events.store import Appended
from jobs.context import JobContext, derive_seed, force_input
from varro.config import VarroConfig, config_from_recorded, recorded_config_bytes
from varro.headlines.spec import as_source


def request_day(
    ctx: JobContext,
    date: str,
    *,
    trigger: str,
    source: HeadlineSource | str,
    seed: int | None = None,
    force: bool = False,
) -> Appended:
    """Record that day `date` should run, with the seed and config it runs with.

    A second request for the same day returns the first one unchanged (the
    store deduplicates by event id), whatever trigger or seed it asked for.
    `source` is a `HeadlineSource` or a spec string (``sample``, ``files:/a``).
    """
    validate_date(date)
    inputs = [force_input(ctx.store, "DailyRunRequested", date)] if force else []
    event_id = derive_event_id(ctx.ns, "DailyRunRequested", date, inputs)
    config_ref = ctx.artifacts.put(recorded_config_bytes(ctx.cfg), kind="config")
    event = DailyRunRequested(
        event_id=event_id,
        ns=ctx.ns,
        date=date,
        correlation_id=event_id,
        trigger=trigger,
        seed=derive_seed(ctx.cfg.seed, ctx.ns) if seed is None else seed,
        source=as_source(source),
        config=config_ref,
        forced=force,
    )
    return ctx.store.append(event)


def day_request(ctx: JobContext, date: str) -> DailyRunRequested | None:
    return ctx.store.latest_of(DailyRunRequested, date)


def run_seed(ctx: JobContext, date: str) -> int:
    """The base seed of day `date`: the one its request recorded, else the namespace default."""
    request = day_request(ctx, date)
    return request.seed if request is not None else derive_seed(ctx.cfg.seed, ctx.ns)


def day_config(ctx: JobContext, date: str) -> VarroConfig:
    """The config day `date` was requested with (so replays use the recorded settings)."""
    request = day_request(ctx, date)
    if request is None or request.config is None:
        return ctx.cfg
    return config_from_recorded(ctx.artifacts.get(request.config), machine=ctx.cfg, ns=ctx.ns)
