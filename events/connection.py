"""Which Redis Varro talks to: `REDIS_URL` when given, else the embedded server."""

from __future__ import annotations

from pathlib import Path

import redis

from events.server import EmbeddedServer


def connect(redis_url: str | None, data_dir: Path | str) -> redis.Redis:
    """A client with raw bytes responses (events are msgpack)."""
    url = redis_url or EmbeddedServer(Path(data_dir)).start()
    return redis.Redis.from_url(url, decode_responses=False)


def describe(redis_url: str | None, data_dir: Path | str) -> tuple[str, str]:
    """(url, "external" | "embedded") without starting anything."""
    if redis_url:
        return redis_url, "external"
    return EmbeddedServer(Path(data_dir)).url, "embedded"
