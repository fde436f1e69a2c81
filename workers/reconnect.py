"""Surviving a server restart: wait for Redis with backoff, and say so in the log.

A long-running process (dispatcher, scheduler, worker) that loses its
connection must neither die nor spin: it logs "connection lost" once, retries
a PING with exponential backoff (each failed attempt logged with its next
delay), and logs "reconnected" with the time it was away before going back to
work. redis-py opens a new connection on the next command, so nothing else has
to be rebuilt; what the process was doing when the connection dropped is
recovered by the usual paths (an unacked stream entry is delivered again, an
abandoned job is re-run once its heartbeat lapses).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis as redis_lib
import structlog

from events.connection import redact

CONNECTION_ERRORS = (redis_lib.exceptions.ConnectionError, redis_lib.exceptions.TimeoutError)


@dataclass(frozen=True)
class Backoff:
    """Delays between reconnection attempts: first_s, doubling, capped at max_s."""

    first_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0

    def next(self, delay: float) -> float:
        return min(self.max_s, delay * self.factor)


def wait_for_server(
    redis: redis_lib.Redis,
    log: structlog.typing.FilteringBoundLogger,
    error: BaseException,
    *,
    process: str,
    backoff: Backoff = Backoff(),
    stop: Callable[[], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Block until `redis` answers again; False only when `stop()` asked to give up first."""
    started = time.monotonic()
    log.warning("connection lost", process=process, error=redact(f"{type(error).__name__}: {error}"))
    delay, attempt = backoff.first_s, 0
    while stop is None or not stop():
        sleep(delay)
        attempt += 1
        try:
            redis.ping()
        except CONNECTION_ERRORS as exc:
            delay = backoff.next(delay)
            log.warning(
                "reconnecting",
                process=process,
                attempt=attempt,
                retry_in_s=round(delay, 2),
                error=redact(f"{type(exc).__name__}: {exc}"),
            )
            continue
        log.warning("reconnected", process=process, attempts=attempt, after_s=round(time.monotonic() - started, 2))
        return True
    return False
