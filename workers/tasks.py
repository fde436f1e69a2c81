"""The functions RQ runs: one per pipeline stage, each a thin shell around a job.

They take only plain values (namespace, date, ids, a source as JSON), so a job is readable in
RQ's registries and dashboard, and build the job's context from the process
runtime (which keeps the loaded model between jobs in a model worker). Each
returns the id of the event its job recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import msgspec
import structlog

from events.ids import today_utc
from events.replies import text
from events.schema import HeadlineSource
from events.store import Appended, key, shards_key
from jobs import daily
from jobs.context import JobContext
from varro.headlines.collect import SourceKind
from varro.model.memory import return_freed_memory
from workers.runtime import get_runtime


@contextmanager
def _job_context(ns: str, date: str, correlation_id: str, stage: str) -> Iterator[JobContext]:
    ctx = get_runtime().context(ns, date, correlation_id=correlation_id)
    try:
        with structlog.contextvars.bound_contextvars(ns=ns, date=date, stage=stage):
            yield ctx
    finally:
        return_freed_memory()  # the next job, of another stage, should not run beside this one's freed buffers


def _result(appended: Appended | None) -> str | None:
    return None if appended is None else appended.event.event_id


def fetch(
    ns: str, date: str, cause: str, correlation_id: str, source: dict[str, Any] | str, force: bool = False
) -> str | None:
    """`source` is the request's `HeadlineSource` as JSON (a spec string from jobs enqueued before it was typed)."""
    from jobs.fetch import copy_recorded_headlines, fetch_headlines
    from varro.headlines.spec import source_from_spec

    day_source = source_from_spec(source) if isinstance(source, str) else msgspec.convert(source, HeadlineSource)
    with _job_context(ns, date, correlation_id, "fetch") as ctx:
        if day_source.kind == "replay":
            return _result(copy_recorded_headlines(ctx, date, day_source.namespace or ""))
        # collect refuses any other kind with an error naming the choices
        source_kind = cast(SourceKind, day_source.kind)
        paths = [Path(p) for p in day_source.paths]
        return _result(fetch_headlines(ctx, date, source=source_kind, paths=paths, force=force))


def generate(ns: str, date: str, cause: str, correlation_id: str, force: bool = False) -> str | None:
    from jobs.generate import generate_rollouts_job

    with _job_context(ns, date, correlation_id, "generate") as ctx:
        return _result(generate_rollouts_job(ctx, date, force=force))


def generate_shard(
    ns: str, date: str, cause: str, correlation_id: str, shard: int, shards: int, force: bool = False
) -> str:
    """One shard of a day's generation; the last shard to finish enqueues the merge.

    Shards record their artifact in a per-(day, cause) hash: coordination state,
    not history (the merged RolloutsGenerated is the record). Several workers
    finishing at once may all see the hash complete; the merge's unique job id
    lets only one of them enqueue it.
    """
    from jobs.generate import generate_shard as run_shard
    from workers.dispatcher import Dispatcher, JobSpec

    with _job_context(ns, date, correlation_id, "generate") as ctx:
        ref = run_shard(ctx, date, shard, shards)
        rt = get_runtime()
        key = shards_key(ns, date, cause)
        rt.redis.hset(key, str(shard), msgspec.json.encode(ref))
        if rt.redis.hlen(key) == shards:
            merge = JobSpec(
                "generate", ns, date, cause, correlation_id, {"shards": shards, "force": force}, task="merge_generated"
            )
            Dispatcher(rt.redis, ctx.cfg).enqueue(merge)
        return ref.sha256


def merge_generated(ns: str, date: str, cause: str, correlation_id: str, shards: int, force: bool = False) -> str:
    """Merge the day's shard artifacts into the one RolloutsGenerated an unsharded job records."""
    from events.schema import ArtifactRef
    from jobs.generate import merge_shards

    with _job_context(ns, date, correlation_id, "generate") as ctx:
        rt = get_runtime()
        key = shards_key(ns, date, cause)
        parts = rt.redis.hgetall(key)
        if len(parts) != shards:
            raise LookupError(f"{len(parts)} of {shards} generation shards of {date} are recorded")
        refs = [msgspec.json.decode(parts[str(i).encode()], type=ArtifactRef) for i in range(shards)]
        appended = merge_shards(ctx, date, refs, force=force)
        rt.redis.delete(key)
        return appended.event.event_id


def rank(
    ns: str, date: str, cause: str, correlation_id: str, outcome_date: str | None = None, force: bool = False
) -> str | None:
    from jobs.rank import rank_job

    with _job_context(ns, date, correlation_id, "rank") as ctx:
        return _result(rank_job(ctx, date, outcome_date=outcome_date, force=force))


RANK_SHARDS_TTL_S = 7 * 24 * 3600  # coordination state outlives any retry of its jobs, then goes
MERGED = "merged"


def rank_shards_key(ns: str, date: str, cause: str) -> str:
    """Coordination state of a sharded ranking (not history): shard -> artifact ref, then the merged event id."""
    return key(ns, "rank-shards", date, cause)


def rank_shard(
    ns: str,
    date: str,
    cause: str,
    correlation_id: str,
    shard: int,
    shards: int,
    outcome_date: str | None = None,
    force: bool = False,
) -> str | None:
    """One shard of a day's ranking; the last shard to finish enqueues the merge.

    The shard's artifact goes into a per-(day, cause) hash like generation's.
    Once merged, the hash keeps only the merged event id, so a shard (or the
    merge) delivered again afterwards does nothing, forced days included,
    whose event ids a re-run would otherwise move on. Several shards finishing
    at once may all see the hash complete; the merge's unique job id lets only
    one of them enqueue it.
    """
    from jobs.rank import rank_shard as run_shard
    from workers.dispatcher import Dispatcher, JobSpec

    with _job_context(ns, date, correlation_id, "rank") as ctx:
        rt = get_runtime()
        state = rank_shards_key(ns, date, cause)
        merged = rt.redis.hget(state, MERGED)
        if merged is not None:
            return text(merged)
        ref = run_shard(ctx, date, shard, shards, outcome_date=outcome_date, force=force)
        if ref is None:
            return None
        with rt.redis.pipeline(transaction=True) as pipe:
            pipe.hset(state, str(shard), msgspec.json.encode(ref))
            pipe.expire(state, RANK_SHARDS_TTL_S)
            pipe.hkeys(state)
            recorded = pipe.execute()[-1]
        if sum(1 for field in recorded if field != MERGED.encode()) == shards:
            merge = JobSpec(
                "rank",
                ns,
                date,
                cause,
                correlation_id,
                {"shards": shards, "outcome_date": outcome_date, "force": force},
                task="merge_ranked",
            )
            Dispatcher(rt.redis, ctx.cfg).enqueue(merge)
        return ref.sha256


def merge_ranked(
    ns: str,
    date: str,
    cause: str,
    correlation_id: str,
    shards: int,
    outcome_date: str | None = None,
    force: bool = False,
) -> str:
    """Merge the day's ranking shards into the one Ranked an unsharded job records."""
    from events.schema import ArtifactRef
    from jobs.rank import merge_rank_shards

    with _job_context(ns, date, correlation_id, "rank") as ctx:
        rt = get_runtime()
        state = rank_shards_key(ns, date, cause)
        parts = rt.redis.hgetall(state)
        if MERGED.encode() in parts:
            return text(parts[MERGED.encode()])
        missing = [i for i in range(shards) if str(i).encode() not in parts]
        if missing:
            raise LookupError(f"ranking shards {missing} of {shards} of {date} are not recorded")
        refs = [msgspec.json.decode(parts[str(i).encode()], type=ArtifactRef) for i in range(shards)]
        appended = merge_rank_shards(ctx, date, refs, outcome_date=outcome_date, force=force)
        event_id = appended.event.event_id
        with rt.redis.pipeline(transaction=True) as pipe:
            pipe.delete(state)
            pipe.hset(state, MERGED, event_id)
            pipe.expire(state, RANK_SHARDS_TTL_S)
            pipe.execute()
        return event_id


def train(ns: str, date: str, cause: str, correlation_id: str, force: bool = False) -> str | None:
    from jobs.train import train_job

    with _job_context(ns, date, correlation_id, "train") as ctx:
        return _result(train_job(ctx, date, force=force))


def request_daily(ns: str, source: str = "rss") -> str:
    """What the cron schedule runs: request today's run (idempotent per day).

    A source that cannot supply today (a file gone since the schedule started)
    fails here as a permanent UsageProblem, before the request is recorded.
    """
    from varro.headlines.spec import check_source

    today = today_utc()
    check_source(source, [today], today=today)
    ctx = get_runtime().context(ns)
    return daily.request_day(ctx, today, trigger="cron", source=source).event.event_id
