"""Sharded ranking through the dispatcher's plan, RQ and a real model worker, with the HTTP judge
against a loopback OpenAI-compatible server: one `Ranked` however often a shard runs."""

from __future__ import annotations

import msgspec
import pytest
import redis as redis_py
from test_judging_http import ScriptedServer
from test_rank_shards import NS, OUTCOME_DAY, D, payload, record_day

from events.store import EventStore
from jobs.context import JobContext
from jobs.rank import rank_job
from varro.artifacts import ArtifactStore
from varro.config import JudgeConfig, VarroConfig, WorkerConfig
from workers import tasks
from workers.dispatcher import MODEL_QUEUE, Dispatcher, plan
from workers.model_worker import ModelWorker
from workers.queues import queue
from workers.runtime import Runtime, set_runtime

SHARDS = 3


def http_judge(url: str) -> JudgeConfig:
    # no retries and no fallback: a failed round fails its shard's job, which RQ retries
    return JudgeConfig(kind="http", fallback="none", http_url=url, retries=0, http_timeout_s=10.0, agreement_sample=3)


@pytest.fixture
def deployment(redis_client, redis_server, tmp_path):
    """Factory: (runtime of the sharded deployment, reference context), one day recorded in each;
    the reference is in another database of the same server, under the same namespace name."""
    other_db = redis_py.Redis.from_url(redis_server.url, db=1, decode_responses=False)
    other_db.flushdb()

    def make(judge: JudgeConfig, *, retries: int) -> tuple[Runtime, JobContext]:
        workers = WorkerConfig(retries=retries, rank_shards=SHARDS)
        cfg = VarroConfig(ns=NS, data_dir=str(tmp_path), judge=judge, workers=workers)
        rt = Runtime(cfg=cfg, redis=redis_client, artifacts=ArtifactStore(tmp_path), models=None)
        set_runtime(rt)
        record_day(rt.store(NS), n_groups=6, size=5)
        reference = EventStore(other_db, NS)
        record_day(reference, n_groups=6, size=5)
        return rt, JobContext(cfg=cfg, store=reference, artifacts=rt.artifacts, models=None)

    yield make
    set_runtime(None)
    other_db.flushdb()
    other_db.close()


def enqueue_ranking(rt: Runtime) -> list:
    """What the dispatcher enqueues when the outcome day's headlines arrive."""
    store = rt.store(NS)
    specs = plan(store.latest("HeadlinesFetched", OUTCOME_DAY), store, rank_shards=SHARDS)
    dispatcher = Dispatcher(rt.redis, rt.cfg)
    assert all(dispatcher.enqueue(spec) for spec in specs)
    return specs


def work(rt: Runtime) -> None:
    ModelWorker([queue(MODEL_QUEUE, rt.redis)], connection=rt.redis).work(
        burst=True, logging_level="WARNING", with_scheduler=False
    )


def finished_tasks(rt: Runtime) -> list[str]:
    model_queue = queue(MODEL_QUEUE, rt.redis)
    jobs = [model_queue.fetch_job(j) for j in model_queue.finished_job_registry.get_job_ids()]
    return sorted(j.func_name for j in jobs if j is not None)


def test_a_failed_shard_is_retried_and_the_merge_completes_identically(deployment):
    with ScriptedServer([("status", 503), ("ok", "A")]) as server:  # the very first round fails
        rt, reference = deployment(http_judge(server.url), retries=1)
        specs = enqueue_ranking(rt)
        assert [(s.task, s.kwargs["shard"]) for s in specs] == [("rank_shard", i) for i in range(SHARDS)]
        work(rt)
        merged = rt.store(NS).all_for("Ranked", D)
        assert len(merged) == 1
        assert finished_tasks(rt) == ["workers.tasks.merge_ranked"] + ["workers.tasks.rank_shard"] * SHARDS
        assert not queue(MODEL_QUEUE, rt.redis).failed_job_registry.get_job_ids()
        reference.correlation_id = specs[0].correlation_id  # as the unsharded rank job is given
        whole = rank_job(reference, D, outcome_date=OUTCOME_DAY).event
    assert merged[0].judge == "http:default" and merged[0].stats.primary_share == 1.0
    assert payload(merged[0]) == payload(whole)  # the retried shard changed nothing in the day


def test_a_shard_or_merge_delivered_again_has_one_effect(deployment):
    with ScriptedServer([("ok", "A")]) as server:
        rt, reference = deployment(http_judge(server.url), retries=0)
        cause, corr = "cause-1", "corr-1"

        def shard(i: int, **kw) -> str | None:
            return tasks.rank_shard(NS, D, cause, corr, i, SHARDS, outcome_date=OUTCOME_DAY, **kw)

        def merge(**kw) -> str:
            return tasks.merge_ranked(NS, D, cause, corr, SHARDS, outcome_date=OUTCOME_DAY, **kw)

        shard(0)
        first_pass = len(server.requests)
        shard(0)  # delivered again before the merge: the same part, counted once
        assert len(server.requests) == 2 * first_pass
        shard(1)
        assert queue(MODEL_QUEUE, rt.redis).count == 0  # two of three: no merge yet
        shard(2)  # the last part enqueues the merge
        assert queue(MODEL_QUEUE, rt.redis).count == 1
        work(rt)
        (merged,) = rt.store(NS).all_for("Ranked", D)
        asked = len(server.requests)
        assert shard(1) == merged.event_id and merge() == merged.event_id  # after the merge: nothing judged
        assert len(server.requests) == asked and len(rt.store(NS).all_for("Ranked", D)) == 1
        state = tasks.rank_shards_key(NS, D, cause)
        assert rt.redis.hkeys(state) == [b"merged"] and 0 < rt.redis.ttl(state) <= tasks.RANK_SHARDS_TTL_S
        reference.correlation_id = corr
        assert payload(merged) == payload(rank_job(reference, D, outcome_date=OUTCOME_DAY).event)

        # a forced day moves its event id on with each forced event: only the marker keeps a
        # merge delivered again from recording a second one
        forced_cause = "cause-forced"
        for i in range(SHARDS):
            tasks.rank_shard(NS, D, forced_cause, corr, i, SHARDS, outcome_date=OUTCOME_DAY, force=True)
        work(rt)
        again = tasks.merge_ranked(NS, D, forced_cause, corr, SHARDS, outcome_date=OUTCOME_DAY, force=True)
        ranked = rt.store(NS).all_for("Ranked", D)
        assert [r.forced for r in ranked] == [False, True] and again == ranked[1].event_id
        assert msgspec.structs.replace(ranked[1], event_id="", forced=False, recorded_at="", prev_hash="") == (
            msgspec.structs.replace(merged, event_id="", recorded_at="", prev_hash="")
        )


def test_both_events_that_make_a_ranking_due_plan_its_shards(deployment):
    rt, _ = deployment(JudgeConfig(), retries=0)
    store = rt.store(NS)
    for event in (store.latest("RolloutsGenerated", D), store.latest("HeadlinesFetched", OUTCOME_DAY)):
        specs = plan(event, store, rank_shards=SHARDS)
        assert [(s.stage, s.date, s.func, s.kwargs["shard"], s.kwargs["outcome_date"]) for s in specs] == [
            ("rank", D, "workers.tasks.rank_shard", i, OUTCOME_DAY) for i in range(SHARDS)
        ]
        assert len({s.job_id for s in specs}) == SHARDS
        (one,) = plan(event, store)  # the default: one rank job
        assert one.func == "workers.tasks.rank" and "shard" not in one.kwargs
