"""The rank job on a real event store: inputs from the log, refusals, idempotence, fallback."""

import socket

import pytest

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
from jobs.context import JobContext
from jobs.rank import RankInputError, rank_job
from varro.artifacts import ArtifactStore
from varro.config import JudgeConfig, VarroConfig
from varro.judging import OutcomesMissing

D = "2025-03-03"
STRUCTURED = "Market Impact: {}\nSpecific Assets: XLE\nTrade Recommendation: buy\nTimeframe: week\n"
TEXTS = [
    STRUCTURED.format("oil prices surge as OPEC cuts output"),
    "oil prices surge",
    "gold",
    "",
    STRUCTURED.format("apple shares fall"),
    "the the the",
    "oil",
    "rates steady",
]


def fetched(ns, date, headlines, tag="feeds"):
    return HeadlinesFetched(
        event_id=derive_event_id(ns, "HeadlinesFetched", date, [tag]),
        ns=ns,
        date=date,
        correlation_id=f"run-{date}",
        headlines=headlines,
        sources=[],
        source_kind="file",
    )


def generated(ns, date, headlines_event, sizes):
    groups = [
        RolloutGroup(
            headline_id=hid,
            prompt_tokens=30,
            rollouts=[
                RolloutSummary(
                    index=i, seed=i, text=TEXTS[i % len(TEXTS)], n_tokens=10, truncated=False, structure_score=0.0
                )
                for i in range(size)
            ],
        )
        for hid, size in sizes.items()
    ]
    return RolloutsGenerated(
        event_id=derive_event_id(ns, "RolloutsGenerated", date, [headlines_event.event_id]),
        ns=ns,
        date=date,
        correlation_id=f"run-{date}",
        headlines_event_id=headlines_event.event_id,
        checkpoint=CheckpointRef(sha256="c0" * 32, base_model="varro-tiny"),
        sampler=SamplerSpec(),
        group_size=8,
        base_seed=1,
        prompt_hash="9" * 64,
        groups=groups,
        artifact=ArtifactRef(sha256="ab" * 32, size=1, kind="rollouts"),
        stats=GenerationStats(
            headlines=len(groups),
            rollouts=sum(sizes.values()),
            generated_tokens=0,
            truncated=0,
            avg_structure_score=0.0,
            wall_s=0.0,
        ),
    )


@pytest.fixture
def ctx(event_store, tmp_path):
    def make(judge=JudgeConfig(), sizes=None):
        store = event_store("ranktest")
        today = fetched(
            store.ns,
            D,
            [
                Headline(id="h1", text="OPEC meets on Monday", source="t"),
                Headline(id="h2", text="Apple reports earnings", source="t"),
                Headline(id="h3", text="Fed speaks", source="t"),
            ],
        )
        store.append(today)
        store.append(generated(store.ns, D, today, sizes or {"h1": 8, "h2": 8, "h3": 8}))
        store.append(
            fetched(
                store.ns,
                "2025-03-04",
                [
                    Headline(id="h1", text="OPEC meets on Monday", source="t"),
                    Headline(id="o1", text="Oil prices surge as OPEC cuts output", source="t"),
                    Headline(id="o2", text="Apple shares fall on weak iPhone sales", source="t"),
                ],
            )
        )
        store.append(fetched(store.ns, "2025-03-06", [Headline(id="o9", text="Rates steady at the Fed", source="t")]))
        cfg = VarroConfig(ns=store.ns, data_dir=str(tmp_path), judge=judge)
        return JobContext(cfg=cfg, store=store, artifacts=ArtifactStore(tmp_path), models=None, correlation_id="c1")

    return make


def test_ranks_against_the_next_day_and_records_everything(ctx):
    job = ctx()
    appended = rank_job(job, D, seed=7)
    event = appended.event
    assert appended.created and isinstance(event, Ranked)
    assert event.outcome_date == "2025-03-04" and event.judge == "lexical" and event.seed == 7
    assert event.judge_config_hash == job.cfg.section_hash("judge")
    assert [g.headline_id for g in event.groups] == ["h1", "h2", "h3"]
    for group in event.groups:
        assert sorted(group.ranks) == list(range(1, 9)) and len(group.rounds) == 7
        assert all(0.0 <= r <= 1.0 for r in group.rewards)
        assert group.raw_scores[3] == 0.0 == min(group.raw_scores)  # empty text scores lowest
        assert all(
            group.ranks[3] > rank for rank, score in zip(group.ranks, group.raw_scores, strict=True) if score > 0
        )
    h1 = event.groups[0]
    assert h1.ranks[0] == 1  # the structured oil prediction matches "oil prices surge as OPEC cuts output"
    stats = event.stats
    assert stats.groups == 3 and stats.n == 24 and stats.negatives == 0
    assert stats.avg == pytest.approx(0.5) and stats.primary_share == 1.0
    assert stats.agreement_groups == 3 and stats.agreement is not None
    assert len(stats.position_pick_rate) == 8 and len(stats.position_chance) == 8
    assert job.store.latest("Ranked", D).event_id == event.event_id


def test_a_rerun_returns_the_recorded_event_and_force_makes_a_new_one(ctx):
    job = ctx()
    first = rank_job(job, D, seed=7)
    again = rank_job(job, D, seed=7)
    assert not again.created and again.event.event_id == first.event.event_id
    forced = rank_job(job, D, seed=7, force=True)
    assert forced.created and forced.event.forced and forced.event.event_id != first.event.event_id
    other_seed = rank_job(job, D, seed=8)
    assert other_seed.created and other_seed.event.event_id != first.event.event_id


def test_an_explicit_outcome_date_overrides_the_next_day(ctx):
    job = ctx()
    event = rank_job(job, D, outcome_date="2025-03-06", seed=7).event
    assert event.outcome_date == "2025-03-06"
    assert event.outcomes_event_id == job.store.latest("HeadlinesFetched", "2025-03-06").event_id
    assert event.event_id != rank_job(job, D, seed=7).event.event_id


def test_a_missing_outcome_day_is_refused_never_fetched(ctx):
    job = ctx()
    with pytest.raises(OutcomesMissing, match="no headlines recorded for outcome date 2025-03-05"):
        rank_job(job, D, outcome_date="2025-03-05")
    assert job.store.all_for("Ranked", D) == []


def test_missing_rollouts_are_refused(ctx):
    job = ctx()
    with pytest.raises(RankInputError, match="no RolloutsGenerated event for 2025-03-04"):
        rank_job(job, "2025-03-04")


def test_groups_of_other_sizes_are_ranked_not_dropped(ctx):
    event = rank_job(ctx(sizes={"h1": 7, "h2": 1, "h3": 3}), D, seed=1).event
    sizes = {g.headline_id: len(g.ranks) for g in event.groups}
    assert sizes == {"h1": 7, "h2": 1, "h3": 3}
    h1, h2, h3 = event.groups
    assert sorted(h1.ranks) == list(range(1, 8)) and h1.rewards[h1.ranks.index(1)] == 1.0
    assert h2.rewards == [0.5] and h2.judge == "none"
    assert sorted(h3.rewards) == [0.0, 0.5, 1.0]
    assert event.stats.n == 11 and event.stats.primary_share == 1.0


def test_an_unreachable_http_judge_falls_back_per_group_and_says_so(ctx):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = JudgeConfig(
        kind="http",
        fallback="semantic",
        http_url=f"http://127.0.0.1:{port}/v1/chat/completions",
        http_timeout_s=0.5,
        http_backoff_s=0.0,
        retries=1,
        agreement_sample=1,
    )
    event = rank_job(ctx(judge=judge), D, seed=3).event
    assert event.judge == "http:default"
    assert event.stats.primary_share == 0.0
    for group in event.groups:
        assert group.judge == "semantic-tfidf" and group.retries == 1
        assert "2 attempts failed, last: ConnectError" in group.fallback_reason
        assert sorted(group.ranks) == list(range(1, 9))
