"""The daily schedule on RQ's own cron support.

The scheduled function only records `DailyRunRequested` for today; that event
is idempotent per (namespace, day), so a manual `varro daily` on the same day
and the cron firing still give exactly one run. Schedule, namespace and source
come from the typed config (`workers.cron`, `ns`, `workers.daily_source`).

`varro scheduler` registers through `register_daily`. The file also works as an
RQ cron config (`rq cron workers/schedule.py`), configured from the environment
and ./varro.toml, since RQ loads a config file under a `rq_cron_config_*` name.
"""

from __future__ import annotations

from collections.abc import Callable

from varro.config import VarroConfig, load_config
from workers.dispatcher import FETCH_QUEUE
from workers.tasks import request_daily


def register_daily(register: Callable[..., object], cfg: VarroConfig) -> None:
    """Register the daily request with `rq.cron.register` or `CronScheduler.register`."""
    register(
        request_daily,
        queue_name=FETCH_QUEUE,
        kwargs={"ns": cfg.ns, "source": cfg.workers.daily_source},
        cron=cfg.workers.cron,
        job_timeout=300,
        name=f"varro-daily-{cfg.ns}",
    )


if __name__.startswith("rq_cron_config"):
    from rq import cron

    register_daily(cron.register, load_config())
