"""The process-wide runtime a worker keeps between jobs.

A model-holding worker runs jobs in its own process (RQ's SimpleWorker), so the
`ModelCache` held here survives from one job to the next and a checkpoint is
loaded once, then reloaded only when a job asks for a different one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import redis as redis_lib
import structlog

from events.connection import connect
from events.store import EventStore
from jobs.context import JobContext
from jobs.daily import day_config
from varro.config import VarroConfig, load_config
from varro.stores import Store, open_store

if TYPE_CHECKING:
    from varro.model.cache import ModelCache


@dataclass
class Runtime:
    cfg: VarroConfig
    redis: redis_lib.Redis
    artifacts: Store
    models: ModelCache
    _stores: dict[str, EventStore] = field(default_factory=dict)

    @classmethod
    def create(cls, cfg: VarroConfig, redis: redis_lib.Redis | None = None) -> Runtime:
        conn = redis if redis is not None else connect(cfg.redis_url, cfg.data_path)
        from varro.model.cache import ModelCache  # imports mlx: only where a job needs it

        artifacts = open_store(cfg)
        return cls(cfg=cfg, redis=conn, artifacts=artifacts, models=ModelCache(cfg, artifacts))

    def store(self, ns: str) -> EventStore:
        if ns not in self._stores:
            self._stores[ns] = EventStore(self.redis, ns)
        return self._stores[ns]

    def context(self, ns: str, date: str | None = None, *, correlation_id: str = "") -> JobContext:
        """A job context for `ns`; with `date`, configured as that day was requested."""
        ctx = JobContext(
            cfg=self.cfg if ns == self.cfg.ns else _with_ns(self.cfg, ns),
            store=self.store(ns),
            artifacts=self.artifacts,
            models=self.models,
            correlation_id=correlation_id,
            log=structlog.get_logger().bind(ns=ns, date=date),
        )
        if date is not None:
            day_cfg = day_config(ctx, date)
            if day_cfg != ctx.cfg:
                ctx.cfg = day_cfg
                if day_cfg.model != self.models.cfg.model:
                    self.models.release()
                    self.models = type(self.models)(day_cfg, self.artifacts)
                    ctx.models = self.models
        return ctx


def _with_ns(cfg: VarroConfig, ns: str) -> VarroConfig:
    return msgspec.structs.replace(cfg, ns=ns)


_runtime: Runtime | None = None
_default_config: VarroConfig | None = None


def set_default_config(cfg: VarroConfig) -> None:
    """The config `get_runtime` builds from: a forking worker sets it from its command line
    in the parent, so every forked job sees the same data dir, Redis and namespace
    without the parent ever creating a runtime (and importing mlx)."""
    global _default_config
    _default_config = cfg


def current_config() -> VarroConfig:
    """The config of this process (its runtime's, else the default one) without creating a runtime."""
    if _runtime is not None:
        return _runtime.cfg
    return _default_config or load_config()


def get_runtime() -> Runtime:
    """The runtime of this process, created on first use from the default config
    (the command line's, else the environment's and config file's)."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime.create(_default_config or load_config())
    return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime
