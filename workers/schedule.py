"""The daily schedule: a small cron loop that enqueues the daily request as JSON.

The scheduled function only records `DailyRunRequested` for today; that event
is idempotent per (namespace, day), so a manual `varro daily` on the same day
and the cron firing still give exactly one run. Schedule, namespace and source
come from the typed config (`workers.cron`, `ns`, `workers.daily_source`).

This is Varro's own loop rather than RQ's `CronScheduler` because RQ's (3.0)
enqueues through a queue built with the pickle serializer, and Varro's workers
refuse pickled jobs (see `workers.queues`). Times are UTC. Each firing's job id
names the namespace and the minute it fired for, so two schedulers running
side by side enqueue one job per firing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import redis as redis_lib
import structlog
from croniter import croniter
from rq.exceptions import DuplicateJobError

from events.ids import sha256_hex
from varro.config import VarroConfig
from workers.dispatcher import FETCH_QUEUE
from workers.queues import queue
from workers.reconnect import CONNECTION_ERRORS, wait_for_server

log = structlog.get_logger("varro.schedule")


class DailySchedule:
    """Enqueues `workers.tasks.request_daily` for one namespace at each cron time."""

    def __init__(self, redis: redis_lib.Redis, cfg: VarroConfig):
        if not croniter.is_valid(cfg.workers.cron):
            raise ValueError(f"workers.cron {cfg.workers.cron!r} is not a cron expression")
        from varro.headlines.spec import check_source

        check_source(cfg.workers.daily_source, [])  # its kind and files; each firing checks its day
        self.redis = redis
        self.cfg = cfg

    def next_time(self, after: datetime) -> datetime:
        """The first cron time strictly after `after` (UTC)."""
        following: datetime = croniter(self.cfg.workers.cron, after.astimezone(UTC)).get_next(datetime)
        return following  # croniter ships no type information; get_next(datetime) returns one

    def job_id(self, when: datetime) -> str:
        key = f"{self.cfg.ns}/{when.astimezone(UTC):%Y-%m-%dT%H:%M}"
        return f"varro_cron_{sha256_hex(key.encode())[:24]}"

    def fire(self, when: datetime) -> bool:
        """Enqueue the request for the firing at `when`; False when that firing is already enqueued."""
        try:
            queue(FETCH_QUEUE, self.redis).enqueue_call(
                "workers.tasks.request_daily",
                kwargs={"ns": self.cfg.ns, "source": self.cfg.workers.daily_source},
                job_id=self.job_id(when),
                unique=True,
                timeout=300,
                description=f"daily request {self.cfg.ns} (cron {when.astimezone(UTC):%Y-%m-%d %H:%M} UTC)",
            )
        except DuplicateJobError:
            return False
        log.info("cron.enqueued", ns=self.cfg.ns, at=when.isoformat())
        return True

    def run(
        self,
        *,
        stop: Callable[[], bool] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        max_sleep_s: float = 30.0,
    ) -> None:
        """Fire at every cron time from now on, until `stop()`; sleeps at most `max_sleep_s` at a time.

        A firing that meets a lost connection waits for the server (with
        backoff, logged) and is then enqueued: it is late, never skipped.
        """
        due = self.next_time(now())
        while stop is None or not stop():
            current = now()
            if current >= due:
                try:
                    self.fire(due)
                except CONNECTION_ERRORS as exc:
                    if not wait_for_server(self.redis, log, exc, process="scheduler", stop=stop, sleep=sleep):
                        return
                    continue
                due = self.next_time(max(current, due))
                continue
            sleep(min(max_sleep_s, (due - current).total_seconds()))
