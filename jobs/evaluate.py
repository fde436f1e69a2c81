"""Evaluate: freeze a held-out panel -> `PanelFrozen`; judge B against A on it -> `Evaluated`.

Both sides answer every panel headline k times with the same seeds, through
the batched generation path, and the configured judge compares each pair (see
varro.evaluation.compare). Before any work, each side's lineage is checked
against the panel: a checkpoint trained on a panel headline is refused.

The event id hashes both checkpoints, the panel, the judge config, k, the seed,
the sampler and the prompt, so an evaluation on the same inputs is recorded
once and re-running it does no work; per-pair results go to an artifact.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import msgspec

from events.errors import PermanentError
from events.ids import canonical_hash, validate_date
from events.schema import (
    CheckpointRef,
    Evaluated,
    Headline,
    HeadlinesFetched,
    Interval,
    PanelFrozen,
    SideSummary,
)
from events.store import Appended
from jobs.context import JobContext, derive_seed, identify
from jobs.judges import configured_judges, judge_model_ref
from varro.evaluation import panel as panels
from varro.evaluation.compare import SideText, judge_pairs, leak_markers, side_metrics
from varro.evaluation.exclusion import check_held_out
from varro.evaluation.stats import Estimate, clustered, outcome_value
from varro.prompts import prompt_hash, prompt_ids

PANEL_KIND = "panel"
RESULTS_KIND = "evaluation"


class EvaluateInputError(PermanentError, ValueError):
    """The panel or a checkpoint named for an evaluation is not what the log holds."""


class EvaluationResults(msgspec.Struct, frozen=True, kw_only=True):
    """The artifact behind an `Evaluated`: every pair's verdict and both sides' texts."""

    pairs: list[dict[str, object]]
    a: list[SideText]
    b: list[SideText]


def freeze_panel(ctx: JobContext, days: Mapping[str, list[Headline]], *, name: str, source: str) -> Appended:
    """Build the panel of `days` with the configured hold-out share and record it once."""
    return record_panel(ctx, panels.build_panel(days, share=ctx.cfg.generation.holdout_share, name=name), source)


def record_panel(ctx: JobContext, panel: panels.Panel, source: str) -> Appended:
    """Store a panel as an artifact and record `PanelFrozen` once per (panel, source)."""
    name = panel.name
    ref = ctx.artifacts.put(panels.encode(panel), kind=PANEL_KIND)
    identity = identify(ctx, "PanelFrozen", panel.dates[-1], [ref.sha256, f"source:{source}"], force=False)
    if identity.recorded is not None:
        return identity.recorded
    return ctx.store.append(
        PanelFrozen(
            event_id=identity.event_id,
            ns=ctx.ns,
            date=panel.dates[-1],
            correlation_id=ctx.correlation_id or identity.event_id,
            name=name,
            source=source,
            artifact=ref,
            items=len(panel.items),
            dates=panel.dates,
            holdout_share=panel.holdout_share,
        )
    )


def logged_days(ctx: JobContext) -> dict[str, list[Headline]]:
    """Each fetched day's headlines as the namespace recorded them (its latest fetch)."""
    days = {}
    for date in ctx.store.dates("HeadlinesFetched"):
        fetched = ctx.store.latest("HeadlinesFetched", date)
        if isinstance(fetched, HeadlinesFetched):
            days[date] = list(fetched.headlines)
    return days


def evaluate_job(
    ctx: JobContext,
    a: CheckpointRef,
    b: CheckpointRef,
    panel_event_id: str,
    *,
    purpose: str = "ab",
    labels: tuple[str, str] = ("A", "B"),
    date: str | None = None,
    cause: str | None = None,
    force: bool = False,
) -> Appended:
    """Judge `b` against `a` on the panel once; returns the store's `Appended` (existing or new)."""
    cfg = ctx.cfg
    frozen = ctx.store.get(panel_event_id)
    if not isinstance(frozen, PanelFrozen):
        raise EvaluateInputError(f"no PanelFrozen event {panel_event_id} in namespace {ctx.ns}: freeze a panel first")
    date = validate_date(date or frozen.date)
    panel = panels.decode(ctx.artifacts.get(frozen.artifact), origin=f"panel artifact {frozen.artifact.sha256[:12]}")
    sampler, k, seed = cfg.sampler(), cfg.eval.k, cfg.eval.seed
    p_hash = prompt_hash(cfg, ctx.models.tokenizer(b))
    judge_model = judge_model_ref(ctx)
    inputs = [
        f"a:{a.sha256}",
        f"b:{b.sha256}",
        f"panel:{frozen.artifact.sha256}",
        cfg.section_hash("judge"),
        f"k:{k}",
        f"seed:{seed}",
        canonical_hash(sampler),
        p_hash,
        f"purpose:{purpose}",
    ]
    if judge_model is not None:
        inputs.append(f"judge-model:{judge_model}")
    identity = identify(ctx, "Evaluated", date, inputs, force=force)
    if identity.recorded is not None:
        return identity.recorded  # its checkpoints passed the lineage check when it was recorded
    events = [s.event for s in ctx.store.read(types=["EpochTrained", "RolloutsGenerated"])]
    for ref, label in zip((a, b), labels, strict=True):
        check_held_out(events, panel, ref.sha256, label)

    seeds = {(item.headline.id, i): derive_seed(seed, item.headline.id, i) for item in panel.items for i in range(k)}
    sides, walls = [], []
    for ref in (a, b):
        started = time.perf_counter()
        sides.append(_answers(ctx, ref, panel, seeds, k))
        walls.append(time.perf_counter() - started)
    primary, fallback = configured_judges(ctx, judge_model)
    results = judge_pairs(primary, fallback, panel.items, sides[0], sides[1])

    by_headline: dict[str, list[float]] = {}
    diffs: dict[str, list[float]] = {}
    for r in results:
        by_headline.setdefault(r.headline_id, []).append(outcome_value(r.verdict))
        if r.a_score is not None and r.b_score is not None:
            diffs.setdefault(r.headline_id, []).append(r.b_score - r.a_score)
    boot = dict(resamples=cfg.eval.bootstrap, seed=seed)
    win = clustered(by_headline, **boot)
    diff = clustered(diffs, **boot) if len(diffs) == len(by_headline) else None
    markers = leak_markers(cfg)
    summaries = []
    for ref, label, texts, wall, side in zip((a, b), labels, sides, walls, ("a", "b"), strict=True):
        scores = [r.a_score if side == "a" else r.b_score for r in results]
        m = side_metrics(texts, scores, markers)
        summaries.append(SideSummary(checkpoint=ref, label=label, wall_s=round(wall, 3), **msgspec.structs.asdict(m)))
    artifact = ctx.artifacts.put(
        msgspec.msgpack.encode(
            EvaluationResults(pairs=[msgspec.to_builtins(r) for r in results], a=sides[0], b=sides[1])
        ),
        kind=RESULTS_KIND,
    )
    event = Evaluated(
        event_id=identity.event_id,
        ns=ctx.ns,
        date=date,
        correlation_id=ctx.correlation_id or identity.event_id,
        causation_id=cause,
        purpose=purpose,
        panel_event_id=frozen.event_id,
        panel=frozen.artifact,
        a=summaries[0],
        b=summaries[1],
        judge=primary.name,
        judge_config_hash=cfg.section_hash("judge"),
        k=k,
        seed=seed,
        sampler=sampler,
        prompt_hash=p_hash,
        headlines=win.clusters,
        pairs=len(results),
        win_rate=_interval(win),
        score_diff=None if diff is None else _interval(diff),
        ties=sum(r.verdict == "tie" for r in results),
        order_disagreements=sum(r.order_disagreement for r in results),
        judge_failures=sum(r.judge_failed for r in results),
        artifact=artifact,
        forced=force,
    )
    appended = ctx.store.append(event)
    ctx.log.info(
        "evaluated",
        purpose=purpose,
        a=a.sha256[:12],
        b=b.sha256[:12],
        win_rate=round(win.value, 4),
        low=round(win.low, 4),
        high=round(win.high, 4),
        pairs=len(results),
    )
    return appended


def _interval(estimate: Estimate) -> Interval:
    return Interval(value=estimate.value, low=estimate.low, high=estimate.high)


def _answers(
    ctx: JobContext, ref: CheckpointRef, panel: panels.Panel, seeds: dict[tuple[str, int], int], k: int
) -> list[SideText]:
    """k answers of one checkpoint to every panel headline, batched like a day's generation."""
    from varro.generation import batch_rows, response_text, sample_in_passes

    loaded = ctx.models.load(ref)
    prompts = [
        (item.headline.id, prompt_ids(ctx.cfg, loaded.tokenizer, item.headline, item.date)) for item in panel.items
    ]
    gen, sampler = ctx.cfg.generation, ctx.cfg.sampler()
    rows = batch_rows(
        gen.batch_size, loaded.model, group_size=k, max_tokens=sampler.max_tokens, kv_cache_mb=gen.kv_cache_mb
    )
    eos = list(loaded.tokenizer.eos_token_ids)
    sampled = sample_in_passes(
        loaded,
        prompts,
        group_size=k,
        sampler=sampler,
        seeds=seeds,
        batch_size=rows,
        eos_token_ids=eos,
        kernels=ctx.cfg.model.kernels,
    )
    return [
        SideText(
            headline_id=s.headline_id,
            index=s.index,
            seed=s.seed,
            text=response_text(loaded.tokenizer, s, eos),
            n_tokens=len(s.response_ids),
            truncated=s.truncated,
        )
        for s in sampled
    ]
