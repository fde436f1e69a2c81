"""End-to-end: two days through the real dispatcher, RQ and the small model, ranking in shards;
every stage's output hash (what `varro verify` compares) equals the unsharded run's."""

from __future__ import annotations

import msgspec
import pytest
from test_pipeline_e2e import DAYS, small_config

from varro.outputs import output_hashes
from workers.dispatcher import MODEL_QUEUE
from workers.inprocess import run_days
from workers.queues import queue
from workers.runtime import Runtime

pytestmark = pytest.mark.slow


def test_two_days_with_sharded_ranking_verify_against_one_rank_job(tmp_path, redis_client):
    base = small_config(tmp_path, ns="reference")
    reference = Runtime.create(base, redis=redis_client)
    run_days(reference, "reference", DAYS[:2], source="sample", seed=42)

    sharded_cfg = msgspec.structs.replace(
        base, ns="sharded", workers=msgspec.structs.replace(base.workers, rank_shards=3)
    )
    sharded = Runtime(cfg=sharded_cfg, redis=redis_client, artifacts=reference.artifacts, models=reference.models)
    run_days(sharded, "sharded", DAYS[:2], source="sample", seed=42)

    hashes = {
        ns: output_hashes(stored.event for stored in reference.store(ns).read()) for ns in ("reference", "sharded")
    }
    assert (DAYS[0], "rank") in hashes["sharded"] and (DAYS[0], "train") in hashes["sharded"]
    assert hashes["sharded"] == hashes["reference"]
    one, merged = (reference.store(ns).all_for("Ranked", DAYS[0]) for ns in ("reference", "sharded"))
    assert len(one) == len(merged) == 1 and merged[0].stats == one[0].stats
    model_queue = queue(MODEL_QUEUE, redis_client)
    finished = [model_queue.fetch_job(j) for j in model_queue.finished_job_registry.get_job_ids()]
    ranks = sorted(
        j.func_name
        for j in finished
        if j is not None and j.meta.get("ns") == "sharded" and j.meta.get("stage") == "rank"
    )
    assert ranks == ["workers.tasks.merge_ranked"] + ["workers.tasks.rank_shard"] * 3
    reference.models.release()
