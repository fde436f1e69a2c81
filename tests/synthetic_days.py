"""Synthetic days for load tests and bench/bench_load.py: valid events of a whole daily chain, many days long.

Each day is what the dispatcher and the jobs record, in their order:
`DailyRunRequested(T)`, `HeadlinesFetched(T)`, then (from the second day)
`Ranked(T-1)` against T's headlines and `EpochTrained(T-1)` from the current
checkpoint, then `RolloutsGenerated(T)` with the checkpoint just trained. Ids
come from `derive_event_id` over the same kind of inputs the jobs use, every
reference names an event of the log, and the events are appended through
`EventStore.append_many`, so the hash chain, the id map and the date indexes
are the store's own. Sizes follow `headlines` (8 roll-outs of about 330
characters per headline, seven judge rounds per group).
"""

from __future__ import annotations

from collections.abc import Iterator

from events.ids import derive_event_id, sha256_hex, shift_date
from events.schema import (
    AnyEvent,
    ArtifactRef,
    CheckpointRef,
    DailyRunRequested,
    EpochMetrics,
    EpochTrained,
    GenerationStats,
    Headline,
    HeadlinesFetched,
    HeadlineSource,
    JudgeRound,
    Ranked,
    RankedGroup,
    RankStats,
    RolloutGroup,
    RolloutsGenerated,
    RolloutSummary,
    SamplerSpec,
    SourceReport,
)
from events.store import EventStore

G = 8
BASE = CheckpointRef(sha256=sha256_hex(b"synthetic base"), base_model="varro-tiny")
TEXT = "\n".join(
    f"## {s}\nBroad equities drift higher over the week as yields ease; watch the dollar."
    for s in ("Market Impact", "Specific Assets", "Trade Recommendation", "Timeframe")
)


def dates(first: str, n: int) -> list[str]:
    return [shift_date(first, i) for i in range(n)]


def day_chain(ns: str, days: list[str], *, headlines: int = 2) -> Iterator[AnyEvent]:
    """The events of `days` (consecutive dates) in append order."""
    checkpoint, previous = BASE, None
    for date in days:
        rid = derive_event_id(ns, "DailyRunRequested", date, [])
        request = DailyRunRequested(
            event_id=rid,
            ns=ns,
            date=date,
            correlation_id=rid,
            trigger="cron",
            seed=1234,
            source=HeadlineSource(kind="sample"),
        )
        fetched = _fetched(ns, date, request, headlines)
        yield request
        yield fetched
        if previous is not None:
            rank = _ranked(previous, fetched)
            epoch = _trained(rank, checkpoint)
            checkpoint = epoch.checkpoint
            yield rank
            yield epoch
        previous = _generated(fetched, checkpoint)
        yield previous


def append_days(store: EventStore, days: list[str], *, headlines: int = 2, batch: int = 500) -> int:
    """Append the chain of `days` to `store` in batches; returns the number of events appended."""
    pending: list[AnyEvent] = []
    total = 0
    for event in day_chain(store.ns, days, headlines=headlines):
        pending.append(event)
        if len(pending) >= batch:
            total += len(store.append_many(pending))
            pending = []
    if pending:
        total += len(store.append_many(pending))
    return total


def _fetched(ns: str, date: str, request: DailyRunRequested, n: int) -> HeadlinesFetched:
    items = [
        Headline(
            id=sha256_hex(f"{date} {i}".encode())[:16],
            text=f"Markets on {date}: story {i} moves bonds, oil and the dollar",
            source="reuters.com",
            url=f"https://reuters.com/{date}/{i}",
            published=f"{date}T06:00:00Z",
        )
        for i in range(n)
    ]
    return HeadlinesFetched(
        event_id=derive_event_id(ns, "HeadlinesFetched", date, []),
        ns=ns,
        date=date,
        correlation_id=request.correlation_id,
        causation_id=request.event_id,
        headlines=items,
        sources=[SourceReport(source="reuters.com", status="ok", fetched=n, kept=n)],
        source_kind="sample",
    )


def _generated(fetched: HeadlinesFetched, checkpoint: CheckpointRef) -> RolloutsGenerated:
    groups = [
        RolloutGroup(
            headline_id=h.id,
            prompt_tokens=60,
            rollouts=[
                RolloutSummary(index=i, seed=i, text=TEXT, n_tokens=90, truncated=False, structure_score=0.66)
                for i in range(G)
            ],
        )
        for h in fetched.headlines
    ]
    n = len(groups) * G
    payload = f"rollouts {fetched.date} {checkpoint.sha256}".encode()
    return RolloutsGenerated(
        event_id=derive_event_id(fetched.ns, "RolloutsGenerated", fetched.date, [fetched.event_id, checkpoint.sha256]),
        ns=fetched.ns,
        date=fetched.date,
        correlation_id=fetched.correlation_id,
        causation_id=fetched.event_id,
        headlines_event_id=fetched.event_id,
        checkpoint=checkpoint,
        sampler=SamplerSpec(),
        group_size=G,
        base_seed=1234,
        prompt_hash=sha256_hex(b"prompt v1"),
        groups=groups,
        artifact=ArtifactRef(sha256=sha256_hex(payload), size=len(payload), kind="rollouts"),
        stats=GenerationStats(
            headlines=len(groups),
            rollouts=n,
            generated_tokens=90 * n,
            truncated=0,
            avg_structure_score=0.66,
            wall_s=9.0,
        ),
    )


def _ranked(rollouts: RolloutsGenerated, outcomes: HeadlinesFetched) -> Ranked:
    ranks = list(range(1, G + 1))
    groups = [
        RankedGroup(
            headline_id=group.headline_id,
            ranks=ranks,
            rewards=[1 - (r - 1) / (G - 1) for r in ranks],
            raw_scores=[0.1 * (G - r) for r in ranks],
            rounds=[JudgeRound(shown=list(range(k, G)), pick=k, raw="A") for k in range(G - 1)],
            judge="lexical",
        )
        for group in rollouts.groups
    ]
    rewards = [r for g in groups for r in g.rewards]
    return Ranked(
        event_id=derive_event_id(rollouts.ns, "Ranked", rollouts.date, [rollouts.event_id, outcomes.event_id]),
        ns=rollouts.ns,
        date=rollouts.date,
        correlation_id=outcomes.correlation_id,
        causation_id=outcomes.event_id,
        outcome_date=outcomes.date,
        rollouts_event_id=rollouts.event_id,
        outcomes_event_id=outcomes.event_id,
        judge="lexical",
        judge_config_hash=sha256_hex(b"judge lexical"),
        seed=7,
        groups=groups,
        stats=RankStats(
            groups=len(groups),
            n=len(rewards),
            avg=sum(rewards) / len(rewards),
            min=min(rewards),
            max=max(rewards),
            negatives=0,
            primary_share=1.0,
        ),
    )


def _trained(rank: Ranked, parent: CheckpointRef) -> EpochTrained:
    checkpoint = CheckpointRef(
        sha256=sha256_hex(f"{rank.ns} {rank.date} {parent.sha256}".encode()), base_model="varro-tiny"
    )
    return EpochTrained(
        event_id=derive_event_id(rank.ns, "EpochTrained", rank.date, [rank.event_id, parent.sha256]),
        ns=rank.ns,
        date=rank.date,
        correlation_id=rank.correlation_id,
        causation_id=rank.event_id,
        ranked_event_id=rank.event_id,
        rollouts_event_id=rank.rollouts_event_id,
        parent_checkpoint=parent,
        checkpoint=checkpoint,
        config_hash=sha256_hex(b"train config"),
        data_hashes=[sha256_hex(rank.event_id.encode())],
        variant="gspo",
        pi_old="recomputed",
        optimizer_state=sha256_hex(checkpoint.sha256.encode()),
        seed=1234,
        metrics=EpochMetrics(
            steps=4,
            sequences=32,
            tokens=2880,
            avg_reward=0.5,
            avg_reward_unscaled=0.4,
            mean_abs_advantage=0.8,
            loss=-0.01,
            kl_old_k3=2e-4,
            kl_old_logratio=1.8e-4,
            kl_ref_k3=None,
            kl_ref_logratio=None,
            clip_frac_low=0.02,
            clip_frac_high=0.04,
            abs_log_ratio_q50=1e-4,
            abs_log_ratio_q90=4e-4,
            abs_log_ratio_max=2e-3,
            grad_norm=0.7,
            learning_rate=1e-5,
            tokens_per_s=900.0,
            wall_s=30.0,
            peak_memory_mb=800.0,
            improvement=0.01,
        ),
    )
