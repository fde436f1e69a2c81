"""The dispatcher: turns each recorded event into the next job of the daily chain.

The chain for day T (arrows are events, boxes are jobs)::

    DailyRunRequested(T) -> [fetch T] -> HeadlinesFetched(T)
        -> [rank T-1 against T]  -> Ranked(T-1)      (only if T-1 has roll-outs)
        -> [train T-1]           -> EpochTrained(T-1)
        -> [generate T]          -> RolloutsGenerated(T)

With no roll-outs for T-1, `HeadlinesFetched(T)` leads straight to generating T
with the current checkpoint. Planning (`plan`) is a pure decision over the event
and what the namespace already holds; the consumer loop around it acks an event
only after its jobs are enqueued, and enqueues with a unique job id derived from
the causing event, so a dispatcher killed between enqueue and ack re-plans the
same job id after recovery (RQ refuses the duplicate while the job is known, and
the job's own deterministic event id makes any second run a no-op).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis as redis_lib
import structlog
from rq import Retry
from rq.exceptions import DuplicateJobError

from events.consumer import Consumer
from events.ids import sha256_hex, shift_date
from events.schema import (
    DailyRunRequested,
    EpochTrained,
    Event,
    HeadlinesFetched,
    Ranked,
    RolloutsGenerated,
)
from events.store import EventStore, key
from varro.config import VarroConfig
from varro.errors import UsageProblem
from workers.liveness import recover_abandoned
from workers.queues import queue
from workers.reconnect import CONNECTION_ERRORS, wait_for_server

FETCH_QUEUE = "varro-fetch"
MODEL_QUEUE = "varro-model"
GROUP = "dispatcher"

log = structlog.get_logger("varro.dispatcher")


class ForeignEvent(ValueError):
    """An event read from one namespace's stream names another namespace."""


@dataclass(frozen=True)
class JobSpec:
    stage: str
    ns: str
    date: str
    cause: str
    correlation_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    task: str | None = None

    @property
    def job_id(self) -> str:
        """Unique per (namespace, task, day, causing event, shard); RQ allows only [A-Za-z0-9_-]."""
        key = f"{self.ns}/{self.cause}/{self.func}/{self.kwargs.get('shard', '')}"
        return f"varro_{self.stage}_{self.date}_{sha256_hex(key.encode())[:24]}"

    @property
    def queue(self) -> str:
        return FETCH_QUEUE if self.stage == "fetch" else MODEL_QUEUE

    @property
    def func(self) -> str:
        return f"workers.tasks.{self.task or self.stage}"


def sharded_specs(spec: JobSpec, shards: int) -> list[JobSpec]:
    """One job, or `shards` shard jobs (task `<stage>_shard`) whose last one to finish enqueues the merge."""
    if shards <= 1:
        return [spec]
    return [
        JobSpec(
            spec.stage,
            spec.ns,
            spec.date,
            spec.cause,
            spec.correlation_id,
            {**spec.kwargs, "shard": shard, "shards": shards},
            task=f"{spec.stage}_shard",
        )
        for shard in range(shards)
    ]


def plan(event: Event, store: EventStore, *, shards: int = 1, rank_shards: int = 1) -> list[JobSpec]:
    """The jobs that `event` makes due, given what the namespace already holds.

    A forced event (a day requested again with --force) re-runs the rest of its
    day's chain as forced, marked events instead of stopping at what exists.
    Generation is split into `shards` jobs and ranking into `rank_shards` where
    the deployment asks for it.
    Jobs go to the namespace of the stream the event was read from (`store`),
    never to the one an event names: an event naming another is foreign.
    """
    ns, corr = store.ns, event.correlation_id
    if event.ns != ns:
        raise ForeignEvent(f"event {event.event_id} belongs to namespace {event.ns!r}, not {ns!r}")
    forced = bool(getattr(event, "forced", False))

    def spec(stage: str, date: str, **kwargs: Any) -> JobSpec:
        return JobSpec(stage, ns, date, event.event_id, corr, {**kwargs, "force": forced})

    def generate(date: str) -> list[JobSpec]:
        return sharded_specs(spec("generate", date), shards)

    def has(kind: str, date: str) -> bool:
        return store.latest(kind, date) is not None

    if isinstance(event, DailyRunRequested):
        return [spec("fetch", event.date, source=msgspec.to_builtins(event.source))]

    if isinstance(event, HeadlinesFetched):
        today, yesterday = event.date, shift_date(event.date, -1)
        if has("RolloutsGenerated", yesterday) and (forced or not has("Ranked", yesterday)):
            return sharded_specs(spec("rank", yesterday, outcome_date=today), rank_shards)
        if has("HeadlinesFetched", yesterday) and not has("RolloutsGenerated", yesterday):
            return []  # yesterday's chain is still running; its RolloutsGenerated continues here
        if has("RolloutsGenerated", yesterday) and not has("EpochTrained", yesterday):
            return []  # yesterday's training is still due; its EpochTrained generates today
        if has("RolloutsGenerated", today) and not forced:
            return []
        return generate(today)

    if isinstance(event, Ranked):
        return [spec("train", event.date)] if forced or not has("EpochTrained", event.date) else []

    if isinstance(event, EpochTrained):
        ranked = store.get_of(Ranked, event.ranked_event_id)
        next_day = ranked.outcome_date if ranked is not None else shift_date(event.date, 1)
        if has("HeadlinesFetched", next_day) and (forced or not has("RolloutsGenerated", next_day)):
            return generate(next_day)
        return []

    if isinstance(event, RolloutsGenerated):
        tomorrow = shift_date(event.date, 1)
        if has("HeadlinesFetched", tomorrow) and not has("Ranked", event.date):
            return sharded_specs(
                JobSpec("rank", ns, event.date, event.event_id, corr, {"outcome_date": tomorrow}), rank_shards
            )
        return []

    return []


def missing_stages(store: EventStore, date: str) -> list[tuple[str, str]]:
    """(stage, day) of each step of day `date`'s chain that has no event yet, in chain order."""
    yesterday = shift_date(date, -1)
    missing = []
    if store.latest("HeadlinesFetched", date) is None:
        missing.append(("fetch", date))
    if store.latest("RolloutsGenerated", yesterday) is not None:
        if store.latest("Ranked", yesterday) is None:
            missing.append(("rank", yesterday))
        elif store.latest("EpochTrained", yesterday) is None:
            missing.append(("train", yesterday))
    if store.latest("RolloutsGenerated", date) is None:
        missing.append(("generate", date))
    return missing


def resume(store: EventStore, date: str) -> list[JobSpec]:
    """The next job of day `date`'s chain when no event is left to cause it.

    A chain stops without an event to continue it when a job failed for good,
    its RQ job expired, or its event was dead-lettered; backfill uses this to
    pick the day up where it stopped. The cause is the stream's last entry, so
    the job id is new whenever the namespace has moved on and repeats otherwise.
    """
    request = store.latest_of(DailyRunRequested, date)
    missing = missing_stages(store, date)
    if request is None or not missing:
        return []
    stage, day = missing[0]
    kwargs = {"fetch": {"source": msgspec.to_builtins(request.source)}, "rank": {"outcome_date": date}}.get(stage, {})
    return [JobSpec(stage, store.ns, day, f"resume:{date}:{store.last_entry_id()}", request.correlation_id, kwargs)]


class DeploymentRunning(UsageProblem):
    """Another dispatcher consumes the namespace: an in-process run would race it for the events."""


PRESENCE_TTL_S = 10


def presence_key(ns: str) -> str:
    """Where a running dispatcher loop says it is dispatching `ns` (expires unless renewed)."""
    return key(ns, "dispatcher")


def active_dispatchers(redis: redis_lib.Redis, ns: str, *, besides: str) -> list[str]:
    """Names of the dispatcher loops (`Dispatcher.run`, a deployment's) dispatching `ns` now.

    Each loop renews a short-lived presence key every round (about every
    second); one that stopped or died lets it expire within PRESENCE_TTL_S.
    In-process runs dispatch by `step` and leave no presence behind.
    """
    name = redis.get(presence_key(ns))
    if name is None:
        return []
    text = name.decode() if isinstance(name, bytes) else str(name)
    return [] if text == besides else [text]


def refuse_if_dispatched(redis: redis_lib.Redis, ns: str, *, me: str) -> None:
    """Raise `DeploymentRunning`, naming the other dispatcher, when one is consuming `ns`."""
    others = active_dispatchers(redis, ns, besides=me)
    if others:
        raise DeploymentRunning(
            f"namespace {ns!r} is being dispatched by a running deployment (dispatcher {others[0]!r}), "
            "which takes this run's events and does the work itself: "
            "request days there with `varro daily` and follow them with `varro status`, "
            "or stop that dispatcher first"
        )


class Dispatcher:
    """Consumes namespace streams through a consumer group and enqueues jobs on RQ.

    An entry another dispatcher read and never acked (it was killed between
    enqueueing and acking) is taken over once it has been idle for
    `min_idle_ms`: by default liveness_s, the bound within which a dead
    worker's job is re-run too, and never more than the former fixed 60 s. A
    live dispatcher holds an entry only while it plans and enqueues, and taking
    one over from a slow one is harmless: the job ids repeat, so RQ refuses
    the second enqueue.
    """

    def __init__(
        self,
        redis: redis_lib.Redis,
        cfg: VarroConfig,
        *,
        name: str = "dispatcher",
        min_idle_ms: int | None = None,
    ):
        self.redis = redis
        self.cfg = cfg
        self.name = name
        self.min_idle_ms = min(60_000, cfg.workers.liveness_s * 1000) if min_idle_ms is None else min_idle_ms
        self._consumers: dict[str, Consumer] = {}
        self.queues = {q: queue(q, redis) for q in (FETCH_QUEUE, MODEL_QUEUE)}

    def consumer(self, ns: str) -> Consumer:
        if ns not in self._consumers:
            consumer = Consumer(
                self.redis,
                ns,
                GROUP,
                self.name,
                max_deliveries=self.cfg.workers.max_deliveries,
                min_idle_ms=self.min_idle_ms,
            )
            consumer.ensure_group("0")
            self._consumers[ns] = consumer
        return self._consumers[ns]

    def enqueue(self, spec: JobSpec) -> bool:
        """Enqueue one job; False when a job with its id is already known to RQ."""
        retry = Retry(max=self.cfg.workers.retries) if self.cfg.workers.retries > 0 else None
        try:
            self.queues[spec.queue].enqueue_call(
                spec.func,
                kwargs={
                    "ns": spec.ns,
                    "date": spec.date,
                    "cause": spec.cause,
                    "correlation_id": spec.correlation_id,
                    **spec.kwargs,
                },
                job_id=spec.job_id,
                unique=True,
                timeout=self.cfg.workers.job_timeout_s,
                retry=retry,
                meta={"ns": spec.ns, "date": spec.date, "stage": spec.stage, "cause": spec.cause},
                description=f"{spec.stage} {spec.ns} {spec.date}",
            )
        except DuplicateJobError:
            return False
        log.info("enqueued", stage=spec.stage, ns=spec.ns, date=spec.date, job_id=spec.job_id)
        return True

    def step(self, ns: str, *, block_ms: int | None = None, count: int = 32) -> int:
        """Handle the deliveries available now for `ns`; returns how many were handled."""
        consumer = self.consumer(ns)
        store = EventStore(self.redis, ns)
        deliveries = consumer.read(count=count, block_ms=block_ms)
        for delivery in deliveries:
            try:
                workers = self.cfg.workers
                for spec in plan(
                    delivery.event, store, shards=workers.generate_shards, rank_shards=workers.rank_shards
                ):
                    self.enqueue(spec)
            except CONNECTION_ERRORS:
                raise  # not the event's fault: it stays pending and is delivered again after reconnecting
            except Exception as exc:  # a planning failure must not lose the event
                log.exception("dispatch failed", entry_id=delivery.entry_id)
                consumer.fail(delivery, f"{type(exc).__name__}: {exc}")
                continue
            consumer.ack(delivery.entry_id)
        return len(deliveries)

    def announce(self, names: list[str]) -> None:
        """Renew this loop's presence on each namespace it dispatches (see `active_dispatchers`)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for ns in names:
                pipe.set(presence_key(ns), self.name, ex=PRESENCE_TTL_S)
            pipe.execute()

    def run(
        self, namespaces: list[str] | None = None, *, poll_s: float = 1.0, stop: Callable[[], bool] | None = None
    ) -> None:
        """Dispatch forever (or until `stop()`), over given or all known namespaces.

        Between rounds it re-runs jobs whose worker died (`recover_abandoned`),
        at most every liveness_s / 4 seconds. A lost connection (the server
        restarting) is logged and waited out with backoff, then dispatching
        goes on: an entry read but not acked before the loss is still pending
        and is delivered again.
        """
        every_s = max(1.0, self.cfg.workers.liveness_s / 4)
        next_recovery = 0.0
        while stop is None or not stop():
            try:
                if time.monotonic() >= next_recovery:
                    recover_abandoned(self.redis, self.queues)
                    next_recovery = time.monotonic() + every_s
                names = namespaces or EventStore.namespaces(self.redis)
                self.announce(names)
                handled = sum(self.step(ns) for ns in names)
            except CONNECTION_ERRORS as exc:
                if not wait_for_server(self.redis, log, exc, process=f"dispatcher {self.name}", stop=stop):
                    return
                self._consumers.clear()  # re-create the groups a server restarted without its data lacks
                continue
            if not handled:
                time.sleep(poll_s)
