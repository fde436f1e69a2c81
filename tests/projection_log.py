"""A hand-built three-day event log for the projection, lineage and report tests.

Day 1 is fetched and generated from the base model; day 2 ranks day 1 against
day 2's headlines, trains checkpoint c1 and generates with it; day 3 ranks and
trains day 2, then both stages are forced to run again (a new judge seed, a new
epoch giving c2b), and day 3's roll-outs come from c2b. Day 3 itself is not yet
ranked or trained. One day-3 headline repeats a day-2 headline.
"""

from __future__ import annotations

import random

from events.ids import derive_event_id, sha256_hex
from events.schema import (
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

NS = "demo"
D1, D2, D3 = "2025-03-03", "2025-03-04", "2025-03-05"
G = 8
BASE_MODEL = "varro-tiny-qwen3"
BASE = CheckpointRef(sha256=sha256_hex(b"base weights"), base_model=BASE_MODEL)
C1 = CheckpointRef(
    sha256=sha256_hex(b"c1"), base_model=BASE_MODEL, path="training/checkpoints/gspo_demo/final_model_20250303"
)
# c2 and its forced re-run share a prefix, so "ab12" is ambiguous.
C2 = CheckpointRef(sha256="ab12" + sha256_hex(b"c2")[4:], base_model=BASE_MODEL)
C2B = CheckpointRef(sha256="ab12" + sha256_hex(b"c2b")[4:], base_model=BASE_MODEL)

HEADLINES = {
    D1: [
        "Fed holds rates at 4.25%-4.50%, signals two cuts later this year",
        "Nvidia shares rise 3% ahead of quarterly earnings",
        "Brent crude falls 2% as OPEC+ weighs output increase",
    ],
    D2: [
        "US payrolls rise by 151,000 in February, unemployment at 4.1%",
        "Euro climbs to three-month high against the dollar",
        "Tesla shares drop 5% after weak China deliveries",
        "Gold hits record above $2,950 an ounce",
    ],
    D3: [
        "ECB cuts deposit rate by 25 basis points to 2.5%",
        "Gold hits record above $2,950 an ounce",
        "Treasury 10-year yield climbs to 4.3%",
    ],
}

SECTIONS = ("Market Impact", "Specific Assets", "Trade Recommendation", "Timeframe", "Risk Factors", "World View")


def headline_id(text: str) -> str:
    return sha256_hex(text.lower().encode())[:16]


def _eid(event_type: str, date: str, *inputs: str) -> str:
    return derive_event_id(NS, event_type, date, list(inputs))


def request(date: str) -> DailyRunRequested:
    eid = _eid("DailyRunRequested", date)
    return DailyRunRequested(
        event_id=eid,
        ns=NS,
        date=date,
        correlation_id=eid,
        trigger="cron",
        seed=1234,
        source=HeadlineSource(kind="sample"),
    )


def fetched(date: str, correlation_id: str) -> HeadlinesFetched:
    headlines = [
        Headline(
            id=headline_id(t),
            text=t,
            source="reuters.com",
            url=f"https://reuters.com/{i}",
            published=f"{date}T0{i}:00:00Z",
        )
        for i, t in enumerate(HEADLINES[date])
    ]
    sources = [
        SourceReport(source="reuters.com", status="ok", fetched=len(headlines) + 2, kept=len(headlines), duplicates=2),
        SourceReport(source="wsj.com", status="failed", error="HTTP 503 after 3 attempts", skipped={"timeout": 1}),
    ]
    return HeadlinesFetched(
        event_id=_eid("HeadlinesFetched", date),
        ns=NS,
        date=date,
        correlation_id=correlation_id,
        headlines=headlines,
        sources=sources,
        source_kind="sample",
        recorded_at=f"{date}T06:00:00Z",
    )


def _prediction(seed: int) -> tuple[str, float]:
    rng = random.Random(seed)
    present = [s for s in SECTIONS if rng.random() < 0.8]
    text = "\n".join(f"## {s}\nBullish on equities for the next week." for s in present)
    return text, len(present) / len(SECTIONS)


def generated(headlines: HeadlinesFetched, checkpoint: CheckpointRef) -> RolloutsGenerated:
    date = headlines.date
    groups = []
    for h_index, h in enumerate(headlines.headlines):
        rollouts = []
        for i in range(G):
            seed = 1000 * h_index + i + int(date[-2:]) * 100_000
            text, score = _prediction(seed)
            rollouts.append(
                RolloutSummary(
                    index=i, seed=seed, text=text, n_tokens=40 + i, truncated=i == G - 1, structure_score=score
                )
            )
        groups.append(RolloutGroup(headline_id=h.id, prompt_tokens=52 + h_index, rollouts=rollouts))
    all_rollouts = [r for g in groups for r in g.rollouts]
    stats = GenerationStats(
        headlines=len(groups),
        rollouts=len(all_rollouts),
        generated_tokens=sum(r.n_tokens for r in all_rollouts),
        truncated=sum(r.truncated for r in all_rollouts),
        avg_structure_score=sum(r.structure_score for r in all_rollouts) / len(all_rollouts),
        wall_s=12.5,
    )
    payload = f"rollouts {date} {checkpoint.sha256}".encode()
    return RolloutsGenerated(
        event_id=_eid("RolloutsGenerated", date, headlines.event_id, checkpoint.sha256),
        ns=NS,
        date=date,
        correlation_id=headlines.correlation_id,
        causation_id=headlines.event_id,
        headlines_event_id=headlines.event_id,
        checkpoint=checkpoint,
        sampler=SamplerSpec(),
        group_size=G,
        base_seed=1234,
        prompt_hash=sha256_hex(b"prompt v1"),
        groups=groups,
        artifact=ArtifactRef(sha256=sha256_hex(payload), size=len(payload), kind="rollouts"),
        stats=stats,
    )


def ranked(rollouts: RolloutsGenerated, outcomes: HeadlinesFetched, *, seed: int, forced: bool = False) -> Ranked:
    groups = []
    picks_by_position = [0] * G
    for g_index, group in enumerate(rollouts.groups):
        rng = random.Random(seed * 31 + g_index)
        order = rng.sample(range(G), G)  # order[k] = roll-out given rank k+1
        ranks = [0] * G
        for k, rollout_index in enumerate(order):
            ranks[rollout_index] = k + 1
        rounds, remaining = [], list(range(G))
        for k in range(G - 1):
            shown = rng.sample(remaining, len(remaining))
            picks_by_position[shown.index(order[k])] += 1
            rounds.append(JudgeRound(shown=shown, pick=order[k], raw="ABCDEFGH"[shown.index(order[k])]))
            remaining.remove(order[k])
        groups.append(
            RankedGroup(
                headline_id=group.headline_id,
                ranks=ranks,
                rewards=[1 - (r - 1) / (G - 1) for r in ranks],
                raw_scores=[round(0.1 * (G - r) + 0.01 * g_index, 4) for r in ranks],
                rounds=rounds,
                judge="lexical",
            )
        )
    rewards = [r for g in groups for r in g.rewards]
    stats = RankStats(
        groups=len(groups),
        n=len(rewards),
        avg=sum(rewards) / len(rewards),
        min=min(rewards),
        max=max(rewards),
        negatives=sum(r < 0 for r in rewards),
        primary_share=1.0,
        position_pick_rate=[p / sum(picks_by_position) for p in picks_by_position],
        agreement=0.6 + 0.01 * seed,
        agreement_groups=len(groups),
    )
    inputs = (rollouts.event_id, outcomes.event_id) + (("force:1",) if forced else ())
    return Ranked(
        event_id=_eid("Ranked", rollouts.date, *inputs),
        ns=NS,
        date=rollouts.date,
        correlation_id=outcomes.correlation_id,
        causation_id=outcomes.event_id,
        outcome_date=outcomes.date,
        rollouts_event_id=rollouts.event_id,
        outcomes_event_id=outcomes.event_id,
        judge="lexical",
        judge_config_hash=sha256_hex(b"judge lexical"),
        seed=seed,
        groups=groups,
        stats=stats,
        forced=forced,
    )


def metrics(steps: int, *, kl: float, clip_low: float, clip_high: float, improvement: float) -> EpochMetrics:
    return EpochMetrics(
        steps=steps,
        sequences=steps * 8,
        tokens=steps * 8 * 45,
        avg_reward=0.5,
        avg_reward_unscaled=0.38,
        mean_abs_advantage=0.81,
        loss=-0.012 * steps,
        kl_old_k3=kl,
        kl_old_logratio=kl * 0.9,
        kl_ref_k3=None,
        kl_ref_logratio=None,
        clip_frac_low=clip_low,
        clip_frac_high=clip_high,
        abs_log_ratio_q50=1e-4,
        abs_log_ratio_q90=4e-4,
        abs_log_ratio_max=2e-3,
        grad_norm=0.7,
        learning_rate=1e-5,
        tokens_per_s=950.0,
        wall_s=31.0,
        peak_memory_mb=812.0,
        improvement=improvement,
    )


def trained(
    rank: Ranked, parent: CheckpointRef, checkpoint: CheckpointRef, epoch_metrics: EpochMetrics, *, forced: bool = False
) -> EpochTrained:
    inputs = (rank.event_id, parent.sha256) + (("force:1",) if forced else ())
    return EpochTrained(
        event_id=_eid("EpochTrained", rank.date, *inputs),
        ns=NS,
        date=rank.date,
        correlation_id=rank.correlation_id,
        causation_id=rank.event_id,
        ranked_event_id=rank.event_id,
        rollouts_event_id=rank.rollouts_event_id,
        parent_checkpoint=parent,
        checkpoint=checkpoint,
        config_hash=sha256_hex(b"train config"),
        data_hashes=[sha256_hex(f"data {rank.event_id}".encode())],
        variant="gspo",
        pi_old="recomputed",
        optimizer_state=sha256_hex(f"adamw {checkpoint.sha256}".encode()),
        seed=1234,
        metrics=epoch_metrics,
        forced=forced,
    )


def build_log() -> dict[str, object]:
    """The log in append order (`"events"`) and its notable events by name."""
    r1, r2, r3 = request(D1), request(D2), request(D3)
    h1 = fetched(D1, r1.correlation_id)
    g1 = generated(h1, BASE)
    h2 = fetched(D2, r2.correlation_id)
    k1 = ranked(g1, h2, seed=7)
    e1 = trained(k1, BASE, C1, metrics(3, kl=2.1e-4, clip_low=0.02, clip_high=0.05, improvement=0.013))
    g2 = generated(h2, C1)
    h3 = fetched(D3, r3.correlation_id)
    k2 = ranked(g2, h3, seed=8)
    e2 = trained(k2, C1, C2, metrics(4, kl=3.4e-4, clip_low=0.03, clip_high=0.04, improvement=0.021))
    k2b = ranked(g2, h3, seed=9, forced=True)
    e2b = trained(k2b, C1, C2B, metrics(5, kl=1.7e-4, clip_low=0.01, clip_high=0.06, improvement=0.034), forced=True)
    g3 = generated(h3, C2B)
    events = [r1, h1, g1, r2, h2, k1, e1, g2, r3, h3, k2, e2, k2b, e2b, g3]
    named = dict(h1=h1, g1=g1, h2=h2, k1=k1, e1=e1, g2=g2, h3=h3, k2=k2, e2=e2, k2b=k2b, e2b=e2b, g3=g3)
    return {"events": events, **named}
