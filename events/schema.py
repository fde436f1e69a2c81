"""The facts Varro records: one frozen msgspec Struct per event type.

Every event is a tagged union member (`type` field = class name) with its own
`schema_version`. Rules that keep old logs readable forever:

* a new field always gets a default;
* a changed meaning gets a new `schema_version` and an upcaster in
  `events.codec` (old encoded events stay as golden fixtures under tests/);
* small data (headline texts, ranks, metrics) lives in the event so the log
  reads on its own; large data (token ids, log-probs, checkpoints, raw feed
  payloads) lives in content-addressed artifacts named by `ArtifactRef`.

The envelope fields `prev_hash` and `recorded_at` are filled in by the event
store at append time; everything else is decided by the job that emits it.
"""

from __future__ import annotations

import msgspec

GENESIS_HASH = "0" * 64


class ArtifactRef(msgspec.Struct, frozen=True, kw_only=True):
    """A content-addressed file under the data directory."""

    sha256: str
    size: int
    kind: str


class CheckpointRef(msgspec.Struct, frozen=True, kw_only=True):
    """A model checkpoint named by the hash of its files (see varro.checkpoints)."""

    sha256: str
    base_model: str
    path: str = ""


# ---------------------------------------------------------------- headlines


class Headline(msgspec.Struct, frozen=True, kw_only=True):
    """One normalised headline. `id` is a stable hash of the normalised text."""

    id: str
    text: str
    source: str
    url: str = ""
    published: str | None = None
    category: str = "markets"


class SourceReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one feed or file contributed to a day, including why items were dropped."""

    source: str
    status: str
    fetched: int = 0
    kept: int = 0
    dropped_by_filter: int = 0
    duplicates: int = 0
    skipped: dict[str, int] = {}
    error: str | None = None  # why the source failed; None when it was read
    payload: ArtifactRef | None = None
    # Added with defaults, so reports recorded before them decode unchanged (no schema bump):
    warnings: dict[str, int] = {}  # read, but not cleanly (a recovered XML slip, a stray byte), by count
    final_url: str | None = None  # where a feed was served from after redirects, when not its own URL


# --------------------------------------------------------------- generation


class SamplerSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str = "default"
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 50
    max_tokens: int = 256


class RolloutSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The readable part of one roll-out; token ids and log-probs are in the artifact."""

    index: int
    seed: int
    text: str
    n_tokens: int
    truncated: bool
    structure_score: float


class RolloutGroup(msgspec.Struct, frozen=True, kw_only=True):
    """The G sibling roll-outs of one headline."""

    headline_id: str
    prompt_tokens: int
    rollouts: list[RolloutSummary]


class GenerationStats(msgspec.Struct, frozen=True, kw_only=True):
    headlines: int
    rollouts: int
    generated_tokens: int
    truncated: int
    avg_structure_score: float
    wall_s: float


# ------------------------------------------------------------------ ranking


class JudgeRound(msgspec.Struct, frozen=True, kw_only=True):
    """One round of the iterative selection: what was shown (roll-out indices in
    letter order A, B, ...), which roll-out was picked, and the judge's raw answer."""

    shown: list[int]
    pick: int | None
    raw: str = ""
    retries: int = 0


class RankedGroup(msgspec.Struct, frozen=True, kw_only=True):
    """One headline's ranking. `ranks[i]`, `rewards[i]` (scaled, [0, 1]) and
    `raw_scores[i]` (the judge's unscaled signal) belong to the i-th roll-out of
    the `RolloutGroup`; rounds name roll-outs by that position too."""

    headline_id: str
    ranks: list[int]
    rewards: list[float]
    raw_scores: list[float | None]
    rounds: list[JudgeRound] = []
    retries: int = 0
    judge: str = ""
    fallback_reason: str | None = None
    # The primary judge's rounds before it gave up (its last round has pick None);
    # empty unless the group was ranked again by the fallback judge.
    failed_rounds: list[JudgeRound] = []


class RankStats(msgspec.Struct, frozen=True, kw_only=True):
    """Per-day reward statistics (never cumulative)."""

    groups: int
    n: int
    avg: float
    min: float
    max: float
    negatives: int
    primary_share: float
    position_pick_rate: list[float] = []
    # What position_pick_rate would be without position bias: mean 1/m over the
    # rounds that showed each position (m = candidates shown in that round).
    position_chance: list[float] = []
    agreement: float | None = None
    agreement_groups: int = 0


# ----------------------------------------------------------------- training


class EpochMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Per-epoch training metrics; every value is for this epoch alone, never cumulative.

    This is the one definition of each metric (README and `varro.gspo.trainer`
    point here); `varro.gspo.metrics` computes them. "Loss tokens" are the
    positions the loss covers (`train.loss_on`); π_old is the policy before the
    epoch's first update.
    """

    steps: int
    """Optimizer updates in this epoch (one per minibatch)."""
    sequences: int
    """Roll-outs trained on."""
    tokens: int
    """Prompt + response tokens of those sequences: what the forward/backward passes process."""
    avg_reward: float
    """Mean reward in [0, 1], rank-derived: what the loss uses."""
    avg_reward_unscaled: float
    """Mean of the judge's raw scores where it gave them, else the mean rank (`avg_reward_unscaled_kind`)."""
    mean_abs_advantage: float
    """Mean |Â_i| over sequences."""
    loss: float
    """Mean over steps of the minibatch loss."""
    kl_old_k3: float
    """After the epoch, KL of the new policy to π_old on the loss tokens as k3, exp(d) − d − 1 with
    d = log π_old − log π_new: a token mean per sequence, then a mean over sequences."""
    kl_old_logratio: float
    """The same, as the plain log-ratio log π_new − log π_old (token mean per sequence, then over sequences)."""
    kl_ref_k3: float | None
    """k3 KL of the policy to the frozen reference as the loss saw it during the epoch: a token mean
    per sequence at the time its minibatch was taken, then a mean over sequences; None when
    train.beta = 0 (no reference is loaded)."""
    kl_ref_logratio: float | None
    """The same against the reference, as the plain log-ratio; None when train.beta = 0."""
    clip_frac_low: float
    """Share of clip units (sequences for GSPO, tokens for GSPO-token and GRPO) where the lower clip
    bound binds (the gradient is zero), over all micro-batches."""
    clip_frac_high: float
    """The same for the upper clip bound."""
    abs_log_ratio_q50: float
    """Median of |log s_i| at the time each sequence's minibatch was taken (0 for the first
    minibatch under pi_old = "recompute"); uncapped, unlike the loss's log-ratio (capped at 10)."""
    abs_log_ratio_q90: float
    """90th percentile of the same."""
    abs_log_ratio_max: float
    """Maximum of the same: above 10 says the loss's log-ratio cap bound."""
    grad_norm: float
    """Mean over steps of the pre-clip global gradient norm."""
    learning_rate: float
    """The optimizer's learning rate (train.learning_rate)."""
    tokens_per_s: float
    """`tokens` / seconds spent in the update loop."""
    wall_s: float
    """Seconds for the whole epoch, both log-prob passes and the measurement included."""
    peak_memory_mb: float
    """MLX's peak allocation during the epoch, MiB."""
    improvement: float
    """With g_i = mean over the loss tokens of roll-out i of log π_new(y_t) − log π_old(y_t) after
    the epoch: mean g_i over roll-outs rewarded above their group's mean − mean g_i over those
    below it. How much more the epoch raised the per-token likelihood of the roll-outs the judge
    preferred than of those it did not; 0 when no group had a spread."""
    avg_reward_unscaled_kind: str = "raw_score"
    """What avg_reward_unscaled averages: "raw_score" (the judge's) or "rank"."""
    peak_rss_mb: float = 0.0
    """The process's resident-set high-water mark, MiB (over the process's lifetime, not the epoch's)."""


# ------------------------------------------------------------------- events


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Envelope shared by every event.

    `event_id` is deterministic (`events.ids.derive_event_id`): the same action on
    the same inputs yields the same id, and the store turns the second append into
    a no-op. `date` is the logical partition; handlers never read the wall clock to
    decide what to do. `prev_hash` chains each stream entry to the one before.
    """

    event_id: str
    ns: str
    date: str
    correlation_id: str
    causation_id: str | None = None
    recorded_at: str = ""
    code_version: str = ""
    prev_hash: str = ""
    schema_version: int = 1


class HeadlineSource(msgspec.Struct, frozen=True, kw_only=True):
    """Where a day's headlines come from: the bundled sample, live RSS, files, or another
    namespace's recorded fetch (a replay). Paths are absolute, each a whole string."""

    kind: str  # "sample" | "rss" | "files" | "replay"
    paths: list[str] = []
    namespace: str | None = None  # the namespace a replay copies from


class DailyRunRequested(Event, frozen=True, kw_only=True):
    """Someone (cron or a person) asked for day `date` to be run.

    schema_version 2: `source` is a `HeadlineSource` (version 1 recorded a
    string such as ``files:/a,/b`` or ``replay:ns``, which a path with a comma
    could not survive; the codec upcasts those).
    """

    trigger: str
    seed: int
    source: HeadlineSource
    config: ArtifactRef | None = None
    forced: bool = False
    schema_version: int = 2


class HeadlinesFetched(Event, frozen=True, kw_only=True):
    headlines: list[Headline]
    sources: list[SourceReport]
    source_kind: str
    forced: bool = False
    filter_mode: str = "strict"
    cap: int | None = None


class RolloutsGenerated(Event, frozen=True, kw_only=True):
    headlines_event_id: str
    checkpoint: CheckpointRef
    sampler: SamplerSpec
    group_size: int
    base_seed: int
    prompt_hash: str
    groups: list[RolloutGroup]
    artifact: ArtifactRef
    stats: GenerationStats
    forced: bool = False


class Ranked(Event, frozen=True, kw_only=True):
    """Roll-outs of `date` ranked against the headlines of `outcome_date`."""

    outcome_date: str
    rollouts_event_id: str
    outcomes_event_id: str
    judge: str
    judge_config_hash: str
    seed: int
    groups: list[RankedGroup]
    stats: RankStats
    forced: bool = False


class EpochTrained(Event, frozen=True, kw_only=True):
    """One GSPO epoch on the ranked roll-outs of `date`."""

    ranked_event_id: str
    rollouts_event_id: str
    parent_checkpoint: CheckpointRef
    checkpoint: CheckpointRef
    config_hash: str
    data_hashes: list[str]
    variant: str
    pi_old: str
    optimizer_state: str
    seed: int
    metrics: EpochMetrics
    forced: bool = False


# ---------------------------------------------------------------- evaluation


class PanelFrozen(Event, frozen=True, kw_only=True):
    """A held-out panel (headlines with their next day) was frozen as an artifact.

    `date` is the panel's last headline day. The artifact holds the items; the
    event says where they came from and how they were held out.
    """

    name: str
    source: str
    artifact: ArtifactRef
    items: int
    dates: list[str]
    holdout_share: float


class SideSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One side of an A/B on the panel: mean per roll-out, each a share unless it says otherwise."""

    checkpoint: CheckpointRef
    label: str
    rollouts: int
    judge_score: float | None = None
    structure: float
    tokens: float
    truncated: float
    leaked: float
    degenerate: float
    wall_s: float = 0.0


class Interval(msgspec.Struct, frozen=True, kw_only=True):
    """A point estimate with its 95% interval, clustered by headline."""

    value: float
    low: float
    high: float


class Evaluated(Event, frozen=True, kw_only=True):
    """Checkpoint B judged head to head against A on a held-out panel.

    `win_rate` is B's share of pairs won (ties count half) over the panel's
    headlines; `score_diff` is B − A in the judge's unscaled score where the
    judge scores. Per-pair verdicts and texts are in `artifact`.
    """

    purpose: str
    panel_event_id: str
    panel: ArtifactRef
    a: SideSummary
    b: SideSummary
    judge: str
    judge_config_hash: str
    k: int
    seed: int
    sampler: SamplerSpec
    prompt_hash: str
    headlines: int
    pairs: int
    win_rate: Interval
    score_diff: Interval | None = None
    ties: int = 0
    order_disagreements: int = 0
    judge_failures: int = 0
    artifact: ArtifactRef
    forced: bool = False


AnyEvent = DailyRunRequested | HeadlinesFetched | RolloutsGenerated | Ranked | EpochTrained | PanelFrozen | Evaluated

EVENT_TYPES: dict[str, type[AnyEvent]] = {
    cls.__name__: cls
    for cls in (DailyRunRequested, HeadlinesFetched, RolloutsGenerated, Ranked, EpochTrained, PanelFrozen, Evaluated)
}

# The schema version each type is written with today. Bump together with an upcaster.
CURRENT_VERSIONS: dict[str, int] = {name: 1 for name in EVENT_TYPES} | {"DailyRunRequested": 2}

# An event may only be appended when each named predecessor type exists in the
# same namespace for the date held in the named field. The store enforces these.
PRECONDITIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "RolloutsGenerated": (("HeadlinesFetched", "date"),),
    "Ranked": (("RolloutsGenerated", "date"), ("HeadlinesFetched", "outcome_date")),
    "EpochTrained": (("Ranked", "date"),),
}
# (Evaluated names its panel by event id, not by date, so it has no date precondition;
# the evaluate job checks the panel event exists before appending.)
