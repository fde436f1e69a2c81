"""Sharded ranking on a real event store: the shards merge into the unsharded `Ranked`, byte for byte.

The reference is the same day ranked by one job in another database of the same embedded
server, under the same namespace name: every input event then has the same id, so the two
`Ranked` events must have the same id and the same bytes (all but the append time and the
chain link, which the store writes).
"""

import msgspec
import pytest
import redis as redis_py

from events.ids import derive_event_id
from events.schema import (
    ArtifactRef,
    CheckpointRef,
    GenerationStats,
    Headline,
    HeadlinesFetched,
    Ranked,
    RolloutGroup,
    RolloutsGenerated,
    RolloutSummary,
    SamplerSpec,
)
from events.store import EventStore
from jobs.context import JobContext
from jobs.rank import RankInputError, merge_rank_shards, rank_job, rank_shard
from varro.artifacts import ArtifactStore
from varro.config import JudgeConfig, VarroConfig
from varro.judging import shards as sharding
from varro.judging.selection import GroupToRank
from varro.outputs import output_hash

NS = "shardday"
D, OUTCOME_DAY = "2025-03-03", "2025-03-04"
WORDS = (
    "oil",
    "gold",
    "rates",
    "fed",
    "apple",
    "shares",
    "surge",
    "fall",
    "rise",
    "cut",
    "output",
    "yields",
    "dollar",
    "banks",
    "chips",
)
SECTIONS = ("Market Impact", "Specific Assets", "Trade Recommendation", "Timeframe")


def prediction(group: int, index: int) -> str:
    """A roll-out whose words vary with (group, index), so every judge sees real differences."""
    lines = [
        f"{s}: {' '.join(WORDS[(group * 7 + index * 3 + k * 5 + n) % len(WORDS)] for n in range(index % 4 + 1))}"
        for k, s in enumerate(SECTIONS[: 1 + (group + index) % len(SECTIONS)])
    ]
    return "\n".join(lines)


def record_day(store: EventStore, n_groups: int, size: int) -> None:
    """A fetched day, its roll-outs and the next day's headlines, as a generate job would leave them."""
    headlines = [
        Headline(id=f"h{g}", text=f"Headline {g}: {WORDS[g % len(WORDS)]} in focus", source="t")
        for g in range(n_groups)
    ]
    today = HeadlinesFetched(
        event_id=derive_event_id(store.ns, "HeadlinesFetched", D, ["files"]),
        ns=store.ns,
        date=D,
        correlation_id="run-1",
        headlines=headlines,
        sources=[],
        source_kind="file",
    )
    store.append(today)
    groups = [
        RolloutGroup(
            headline_id=h.id,
            prompt_tokens=30,
            rollouts=[
                RolloutSummary(
                    index=i, seed=i, text=prediction(g, i), n_tokens=10, truncated=False, structure_score=0.0
                )
                for i in range(size)
            ],
        )
        for g, h in enumerate(headlines)
    ]
    store.append(
        RolloutsGenerated(
            event_id=derive_event_id(store.ns, "RolloutsGenerated", D, [today.event_id]),
            ns=store.ns,
            date=D,
            correlation_id="run-1",
            headlines_event_id=today.event_id,
            checkpoint=CheckpointRef(sha256="c0" * 32, base_model="varro-tiny"),
            sampler=SamplerSpec(),
            group_size=size,
            base_seed=1,
            prompt_hash="9" * 64,
            groups=groups,
            artifact=ArtifactRef(sha256="ab" * 32, size=1, kind="rollouts"),
            stats=GenerationStats(
                headlines=n_groups,
                rollouts=n_groups * size,
                generated_tokens=0,
                truncated=0,
                avg_structure_score=0.0,
                wall_s=0.0,
            ),
        )
    )
    outcomes = [
        Headline(id=f"o{k}", text=f"{WORDS[k]} {WORDS[(k + 6) % len(WORDS)]} after {WORDS[(k + 3) % 15]}", source="t")
        for k in range(9)
    ]
    store.append(
        HeadlinesFetched(
            event_id=derive_event_id(store.ns, "HeadlinesFetched", OUTCOME_DAY, ["files"]),
            ns=store.ns,
            date=OUTCOME_DAY,
            correlation_id="run-2",
            headlines=outcomes,
            sources=[],
            source_kind="file",
        )
    )


def payload(event: Ranked) -> bytes:
    """The event's bytes without what the store writes on append (the time and the chain link)."""
    return msgspec.json.encode(msgspec.structs.replace(event, recorded_at="", prev_hash="", code_version=""))


@pytest.fixture
def other_db(redis_server):
    """A second, empty database of the same server: the unsharded reference lives there."""
    client = redis_py.Redis.from_url(redis_server.url, db=1, decode_responses=False)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def days(redis_client, other_db, tmp_path):
    """Factory: (sharded ctx, reference ctx) for one recorded day, ranked with `judge`."""

    def make(judge: JudgeConfig, n_groups: int = 7, size: int = 8) -> tuple[JobContext, JobContext]:
        out = []
        for client in (redis_client, other_db):
            store = EventStore(client, NS)
            record_day(store, n_groups, size)
            cfg = VarroConfig(ns=NS, data_dir=str(tmp_path), judge=judge)
            out.append(JobContext(cfg=cfg, store=store, artifacts=ArtifactStore(tmp_path), models=None))
        return out[0], out[1]

    return make


def sharded(ctx: JobContext, shards: int, *, seed: int = 7, order=None) -> Ranked:
    refs = [rank_shard(ctx, D, shard, shards, seed=seed) for shard in (order or range(shards))]
    by_shard = {sharding.decode(ctx.artifacts.get(ref)).shard: ref for ref in refs}
    merged = merge_rank_shards(ctx, D, [by_shard[s] for s in range(shards)], seed=seed)
    assert merged.created
    return merged.event


@pytest.mark.parametrize("shards", [2, 3, 7])
def test_shards_merge_into_the_unsharded_ranked_byte_for_byte(days, shards):
    ctx, reference = days(JudgeConfig(agreement_sample=4))
    merged = sharded(ctx, shards, order=reversed(range(shards)))  # finishing order does not matter
    whole = rank_job(reference, D, seed=7)
    assert whole.created
    assert merged.event_id == whole.event.event_id
    assert payload(merged) == payload(whole.event)
    assert output_hash(merged) == output_hash(whole.event)  # what `varro verify` compares
    assert merged.stats.agreement_groups == 4 and merged.stats.groups == 7
    # the unsharded job on the sharded namespace finds the merged event: the same identity
    again = rank_job(ctx, D, seed=7)
    assert not again.created and again.event.event_id == merged.event_id
    assert len(ctx.store.all_for("Ranked", D)) == 1


def test_groups_of_several_sizes_and_an_empty_shard_merge_identically(days):
    """More shards than groups: some shards judge nothing and still report; the merge is the same."""
    ctx, reference = days(JudgeConfig(agreement_sample=2), n_groups=3, size=3)
    merged = sharded(ctx, 5)
    assert payload(merged) == payload(rank_job(reference, D, seed=7).event)


def test_the_local_judge_splits_in_whole_batches_and_merges_bit_identically(days, tiny_model_path):
    """The mlx judge's raw scores move in their last bits with the rows that share a forward, so
    its groups go to shards in whole batches (`judge.batch_size`); then every bit is kept."""
    judge = JudgeConfig(kind="mlx", mlx_model=str(tiny_model_path), batch_size=2, agreement_sample=3)
    ctx, reference = days(judge, n_groups=5, size=4)
    merged = sharded(ctx, 2)
    whole = rank_job(reference, D, seed=7).event
    assert whole.judge.startswith("mlx") and whole.stats.primary_share == 1.0
    assert payload(merged) == payload(whole)
    assert all(score is not None for g in merged.groups for score in g.raw_scores)


def test_a_shard_delivered_again_after_the_merge_judges_nothing(days):
    ctx, _ = days(JudgeConfig())
    merged = sharded(ctx, 2)
    assert rank_shard(ctx, D, 0, 2, seed=7) is None
    assert len(ctx.store.all_for("Ranked", D)) == 1 and ctx.store.latest("Ranked", D).event_id == merged.event_id


def test_the_merge_refuses_parts_that_do_not_make_the_day(days):
    ctx, _ = days(JudgeConfig())
    refs = [rank_shard(ctx, D, shard, 3, seed=7) for shard in range(3)]
    with pytest.raises(RankInputError, match=r"missing \['h2', 'h5'\]"):
        merge_rank_shards(ctx, D, refs[:2], seed=7)
    with pytest.raises(RankInputError, match="h0 twice"):
        merge_rank_shards(ctx, D, [refs[0], *refs], seed=7)
    with pytest.raises(RankInputError, match="judged from other inputs"):
        merge_rank_shards(ctx, D, refs, seed=8)  # another seed is another ranking
    with pytest.raises(RankInputError, match="shard 2 of 2"):
        rank_shard(ctx, D, 2, 2, seed=7)
    assert ctx.store.all_for("Ranked", D) == []


def test_batched_judges_keep_whole_batches_on_one_shard():
    groups = [GroupToRank(headline_id=f"h{i}", headline="x", texts=("a", "b")) for i in range(7)]
    ids = [[g.headline_id for g in sharding.shard_of(groups, s, 2, 3)] for s in range(2)]
    assert ids == [["h0", "h1", "h2", "h6"], ["h3", "h4", "h5"]]
    assert [g.headline_id for g in sharding.shard_of(groups, 1, 2, None)] == ["h1", "h3", "h5"]
    mixed = [*groups[:3], GroupToRank(headline_id="odd", headline="x", texts=("a", "b", "c"))]
    assert sharding.shard_of(mixed, 0, 2, 3) == mixed and sharding.shard_of(mixed, 1, 2, 3) == []
    assert sharding.batch_rows(JudgeConfig(kind="mlx", batch_size=5)) == 5
    assert sharding.batch_rows(JudgeConfig(kind="http")) is None
