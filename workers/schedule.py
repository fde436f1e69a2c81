"""RQ cron configuration, loaded by `varro scheduler` (or `rq cron workers/schedule.py`).

The scheduled function only records `DailyRunRequested` for today; that event
is idempotent per (namespace, day), so a manual `varro daily` on the same day
and the cron firing still give exactly one run. Schedule, namespace and source
come from the typed config (`workers.cron`, `ns`, `workers.daily_source`).
"""

from __future__ import annotations

from rq import cron

from varro.config import load_config
from workers.dispatcher import FETCH_QUEUE
from workers.tasks import request_daily

_cfg = load_config()

cron.register(
    request_daily,
    queue_name=FETCH_QUEUE,
    kwargs={"ns": _cfg.ns, "source": _cfg.workers.daily_source},
    cron=_cfg.workers.cron,
    job_timeout=300,
    name=f"varro-daily-{_cfg.ns}",
)
