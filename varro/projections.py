"""The original system's on-disk layout, rebuilt from the event log alone.

Users of the original system find their files where they expect them, but here
every file is a pure fold over the log: the same events always give the same
bytes (canonical JSON: sorted keys, indent 2, trailing newline), so
`varro rebuild` can delete and regenerate them at will. Paths, relative to the
data directory:

    timestamped_storage_<NS>/<date>_headlines.json         HeadlinesFetched(date)
    timestamped_storage_<NS>/<date>_predictions.json       RolloutsGenerated(date)
    timestamped_storage_<NS>/<date>_outcome_tracking.json  Ranked(date): the outcome headlines used
    timestamped_storage_<NS>/<date>_evaluations.json       Ranked(date): ranks, rewards, rounds, day stats
    timestamped_storage_<NS>/<date>_ab.json                Evaluated(date): held-out A/B results, in append order
    timestamped_storage_<NS>/index.json                    dates x stages
    training/gspo_<NS>/gspo_training_<date>.json           EpochTrained(date)

Deliberate departure: the original wrote `training/gspo_training_<date>.json`
with no namespace, so two runs overwrote each other's training records
(REFERENCE.md). Here they live under `training/gspo_<NS>/`, beside
`training/checkpoints/gspo_<NS>/`, which belongs to the trainer and is never
touched here.

`<date>` is always the logical date of the event: `<date>_evaluations.json` holds
the roll-outs *generated* on `date`, judged against `outcome_date`'s headlines,
and `gspo_training_<date>.json` the epoch trained on those roll-outs. When a
stage was forced to run again for a date, the file shows the latest appended
event and lists the ids it superseded. Every number is for that date alone,
never cumulative; rewards are labelled scaled (the [0, 1] reward from ranks) or
unscaled (the judge's raw signal).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import msgspec

from events.errors import PermanentError
from events.ids import validate_date, validate_ns
from events.schema import (
    AnyEvent,
    EpochTrained,
    Evaluated,
    Event,
    HeadlinesFetched,
    Ranked,
    RankedGroup,
    RolloutsGenerated,
)
from varro.artifacts import atomic_write
from varro.judging.outcomes import outcome_headlines
from varro.lineage import STAGE_EVENTS, CheckpointHistory

REWARD_DEFINITION = (
    "reward_scaled = 1 - (rank - 1) / (G - 1), in [0, 1], G = the group's roll-out count; "
    "raw_score_unscaled is the judge's own signal before ranking (null when the judge gives none)"
)

# RankStats fields renamed in evaluations.json so each number says what it is.
_RANK_STAT_NAMES = {
    "n": "rewards_n",
    "avg": "reward_avg_scaled",
    "min": "reward_min_scaled",
    "max": "reward_max_scaled",
    "negatives": "negative_rewards",
    "primary_share": "primary_judge_share",
    "agreement": "agreement_rank_correlation",
}


StageEvent = HeadlinesFetched | RolloutsGenerated | Ranked | EpochTrained
"""The events a stage records: each gives one day's projection files."""


class ProjectionError(PermanentError, ValueError):
    """The events or files handed to a projection do not belong to it."""


class Latest(NamedTuple):
    """The event that stands for one (type, date), and the earlier ones it superseded."""

    event: AnyEvent
    superseded: tuple[str, ...]


def fold_latest(events: Iterable[AnyEvent]) -> dict[tuple[type, str], Latest]:
    """(event class, date) -> the latest appended event; `events` in append order, one namespace."""
    groups: dict[tuple[type, str], list[AnyEvent]] = {}
    seen: set[str] = set()
    namespaces: set[str] = set()
    for event in events:
        namespaces.add(event.ns)
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        groups.setdefault((type(event), event.date), []).append(event)
    if len(namespaces) > 1:
        raise ProjectionError(
            f"events from several namespaces ({', '.join(sorted(namespaces))}): fold one namespace at a time"
        )
    return {key: Latest(evs[-1], tuple(e.event_id for e in evs[:-1])) for key, evs in groups.items()}


def _evaluations_by_date(log: Iterable[AnyEvent]) -> dict[str, list[Evaluated]]:
    out: dict[str, list[Evaluated]] = {}
    seen: set[str] = set()
    for event in log:
        if isinstance(event, Evaluated) and event.event_id not in seen:
            seen.add(event.event_id)
            out.setdefault(event.date, []).append(event)
    return out


def storage_dir(ns: str) -> str:
    return f"timestamped_storage_{ns}"


def training_dir(ns: str) -> str:
    return f"training/gspo_{ns}"


def project(events: Iterable[AnyEvent], ns: str) -> dict[str, bytes]:
    """Every projection file of namespace `ns`: relative path -> bytes.

    Pure: reads nothing but `events` (in append order), so the same log always
    gives bit-identical files.
    """
    validate_ns(ns)
    log = list(events)
    for event in log:
        if event.ns != ns:
            raise ProjectionError(f"{_describe(event)} belongs to namespace {event.ns!r}, not {ns!r}")
        try:
            validate_date(event.date)
        except ValueError as exc:
            raise ProjectionError(f"{_describe(event)}: {exc}") from None
    latest = fold_latest(log)
    by_id = {event.event_id: event for event in log}
    history = CheckpointHistory(log)
    docs: dict[str, dict[str, Any]] = {}
    index: dict[str, dict[str, Any]] = {}
    for (_, date), item in sorted(latest.items(), key=lambda kv: (kv[0][1], kv[0][0].__name__)):
        event, superseded = item
        if isinstance(event, HeadlinesFetched):
            stage, built = "fetch", {_dated(ns, date, "headlines"): _headlines_doc(event, superseded)}
        elif isinstance(event, RolloutsGenerated):
            stage, built = "generate", {_dated(ns, date, "predictions"): _predictions_doc(event, superseded, by_id)}
        elif isinstance(event, Ranked):
            stage, built = (
                "rank",
                {
                    _dated(ns, date, "outcome_tracking"): _outcome_doc(event, superseded, by_id),
                    _dated(ns, date, "evaluations"): _evaluations_doc(event, superseded, by_id),
                },
            )
        elif isinstance(event, EpochTrained):
            stage, built = (
                "train",
                {f"{training_dir(ns)}/gspo_training_{date}.json": _training_doc(event, superseded, history)},
            )
        else:
            continue
        docs.update(built)
        index.setdefault(date, dict.fromkeys(STAGE_EVENTS))[stage] = {
            "event_id": item.event.event_id,
            "superseded_event_ids": list(item.superseded),
            "files": sorted(built),
        }
    for date, evaluations in _evaluations_by_date(log).items():
        docs[_dated(ns, date, "ab")] = {
            "date": date,
            "evaluations": [_builtins(e) for e in evaluations],
            "note": "win_rate: B's share of pairs won on held-out panel headlines (ties half), with its 95% "
            "interval clustered by headline; per-pair verdicts are in each evaluation's artifact",
        }
    docs[f"{storage_dir(ns)}/index.json"] = {
        "namespace": ns,
        "stages": list(STAGE_EVENTS),
        "dates": index,
        "note": "per date, each stage's latest event and its files; null = the stage has no event for that date",
    }
    return {path: canonical_json(doc) for path, doc in docs.items()}


def write_projections(files: Mapping[str, bytes], root: Path, ns: str) -> None:
    """Bring `ns`'s projection directories under `root` to exactly `files`.

    Each file is replaced atomically (unchanged ones are left alone); projection
    files no longer produced (e.g. after a rebuild from a shorter log) are
    removed. Other namespaces, `training/checkpoints/` and anything not named
    `*.json` are never touched.
    """
    validate_ns(ns)
    owned = (storage_dir(ns), training_dir(ns))
    for rel in files:
        path = PurePosixPath(rel)
        if path.suffix != ".json" or ".." in path.parts or path.parent.as_posix() not in owned:
            raise ProjectionError(
                f"{rel!r} is not a projection file of namespace {ns!r} (expected {' or '.join(owned)}/*.json)"
            )
    root = Path(root)
    for rel, data in sorted(files.items()):
        target = root / rel
        if not (target.is_file() and target.read_bytes() == data):
            atomic_write(target, data)
    for directory in owned:
        for stale in sorted((root / directory).glob("*.json")):
            if stale.relative_to(root).as_posix() not in files and stale.is_file() and not stale.is_symlink():
                stale.unlink()


def canonical_json(doc: Any) -> bytes:
    """Sorted keys, indent 2, trailing newline; NaN/Infinity spelled as strings so the file stays valid JSON."""
    return (json.dumps(_finite(doc), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


# ---------------------------------------------------------------- documents


def _headlines_doc(event: HeadlinesFetched, superseded: tuple[str, ...]) -> dict[str, Any]:
    return {
        **_header(event, superseded),
        "date": event.date,
        "source_kind": event.source_kind,
        "filter_mode": event.filter_mode,
        "cap": event.cap,
        "headline_count": len(event.headlines),
        "headlines": _builtins(event.headlines),
        "sources": _builtins(event.sources),
    }


def _predictions_doc(
    event: RolloutsGenerated, superseded: tuple[str, ...], by_id: Mapping[str, Event]
) -> dict[str, Any]:
    texts = _headline_texts(by_id.get(event.headlines_event_id))
    return {
        **_header(event, superseded),
        "date": event.date,
        "headlines_event_id": event.headlines_event_id,
        "checkpoint": _builtins(event.checkpoint),
        "sampler": _builtins(event.sampler),
        "group_size": event.group_size,
        "base_seed": event.base_seed,
        "prompt_hash": event.prompt_hash,
        "artifact": _builtins(event.artifact),
        "day_stats": {"scope": f"per-day: the roll-outs generated for {event.date}", **_builtins(event.stats)},
        "predictions": [
            {
                "headline_id": group.headline_id,
                "headline": texts.get(group.headline_id),
                "prompt_tokens": group.prompt_tokens,
                "rollouts": _builtins(group.rollouts),
            }
            for group in event.groups
        ],
    }


def _outcome_doc(event: Ranked, superseded: tuple[str, ...], by_id: Mapping[str, Event]) -> dict[str, Any]:
    """Which headlines the roll-outs of `date` were judged against.

    `judged_against` is False for an outcome headline the judge set aside
    (already known on the prediction day, or a repeat), decided by the judge's
    own rule, `varro.judging.outcomes.outcome_headlines`.
    """
    outcomes = by_id.get(event.outcomes_event_id)
    rollouts = by_id.get(event.rollouts_event_id)
    prediction_day = by_id.get(rollouts.headlines_event_id) if isinstance(rollouts, RolloutsGenerated) else None
    own = prediction_day.headlines if isinstance(prediction_day, HeadlinesFetched) else []
    texts = {h.id: h.text for h in own}
    outcome_list = None
    if isinstance(outcomes, HeadlinesFetched):
        used = {id(h) for h in outcome_headlines(outcomes.headlines, own)}  # it returns the objects it kept
        outcome_list = [{**_builtins(h), "judged_against": id(h) in used} for h in outcomes.headlines]
    return {
        **_header(event, superseded),
        "prediction_date": event.date,
        "outcome_date": event.outcome_date,
        "rollouts_event_id": event.rollouts_event_id,
        "outcomes_event_id": event.outcomes_event_id,
        "judge": event.judge,
        "outcome_headline_count": None if outcome_list is None else len(outcome_list),
        "outcome_headlines_judged_against": (
            None if outcome_list is None else sum(h["judged_against"] for h in outcome_list)
        ),
        "outcome_headlines": outcome_list,
        "predictions_tracked": [
            {
                "headline_id": group.headline_id,
                "headline": texts.get(group.headline_id),
                "rollouts": len(group.ranks),
                "judge": group.judge,
                "fallback_reason": group.fallback_reason,
            }
            for group in event.groups
        ],
    }


def _evaluations_doc(event: Ranked, superseded: tuple[str, ...], by_id: Mapping[str, Event]) -> dict[str, Any]:
    """Ranks and rewards of `date`'s roll-outs; list position i is the group's i-th roll-out."""
    rollouts = by_id.get(event.rollouts_event_id)
    texts = _headline_texts(by_id.get(rollouts.headlines_event_id)) if isinstance(rollouts, RolloutsGenerated) else {}
    return {
        **_header(event, superseded),
        "date": event.date,
        "outcome_date": event.outcome_date,
        "rollouts_event_id": event.rollouts_event_id,
        "outcomes_event_id": event.outcomes_event_id,
        "judge": event.judge,
        "judge_config_hash": event.judge_config_hash,
        "seed": event.seed,
        "reward_definition": REWARD_DEFINITION,
        "groups": [_ranked_group(group, texts.get(group.headline_id), event) for group in event.groups],
        "day_stats": {
            "scope": f"per-day: the roll-outs generated for {event.date} only, never cumulative",
            **{_RANK_STAT_NAMES.get(key, key): value for key, value in _builtins(event.stats).items()},
        },
    }


def _ranked_group(group: RankedGroup, headline: str | None, event: Ranked) -> dict[str, Any]:
    if not len(group.ranks) == len(group.rewards) == len(group.raw_scores):
        raise ProjectionError(
            f"Ranked {event.event_id} ({event.date}), headline {group.headline_id}: "
            f"{len(group.ranks)} ranks, {len(group.rewards)} rewards and {len(group.raw_scores)} raw scores "
            "differ in length"
        )
    per_rollout = ("ranks", "rewards", "raw_scores")
    return {
        **{key: value for key, value in _builtins(group).items() if key not in per_rollout},
        "headline": headline,
        "rollouts": [
            {"index": i, "rank": rank, "reward_scaled": reward, "raw_score_unscaled": raw}
            for i, (rank, reward, raw) in enumerate(zip(group.ranks, group.rewards, group.raw_scores, strict=True))
        ],
    }


def _training_doc(event: EpochTrained, superseded: tuple[str, ...], history: CheckpointHistory) -> dict[str, Any]:
    steps = history.walk(event)
    return {
        **_header(event, superseded),
        "date": event.date,
        "trained_on": f"the ranked roll-outs of {event.date}",
        "ranked_event_id": event.ranked_event_id,
        "rollouts_event_id": event.rollouts_event_id,
        "parent_checkpoint": _builtins(event.parent_checkpoint),
        "checkpoint": _builtins(event.checkpoint),
        "config_hash": event.config_hash,
        "data_hashes": list(event.data_hashes),
        "variant": event.variant,
        "pi_old": event.pi_old,
        "optimizer_state": event.optimizer_state,
        "seed": event.seed,
        "metrics": {
            "scope": f"this epoch only (trained on the roll-outs of {event.date}), never cumulative",
            **_builtins(event.metrics),
            "clip_frac_low_plus_high": event.metrics.clip_frac_low + event.metrics.clip_frac_high,
        },
        "lineage": [
            {
                "date": step.date,
                "checkpoint_sha256": step.checkpoint_sha256,
                "parent_sha256": step.parent_sha256,
                "epoch_event_id": step.epoch_event_id,
            }
            for step in steps
        ],
        "root_checkpoint_sha256": steps[-1].parent_sha256,
    }


# ------------------------------------------------------------------ helpers


def _header(event: StageEvent, superseded: tuple[str, ...]) -> dict[str, Any]:
    return {
        "namespace": event.ns,
        "event": {
            "event_id": event.event_id,
            "type": type(event).__name__,
            "correlation_id": event.correlation_id,
            "recorded_at": event.recorded_at,
            "code_version": event.code_version,
            "forced": event.forced,
            "superseded_event_ids": list(superseded),
        },
    }


def _headline_texts(event: Event | None) -> dict[str, str]:
    return {h.id: h.text for h in event.headlines} if isinstance(event, HeadlinesFetched) else {}


def _dated(ns: str, date: str, kind: str) -> str:
    return f"{storage_dir(ns)}/{date}_{kind}.json"


def _describe(event: Event) -> str:
    return f"event {event.event_id} ({type(event).__name__}, date {event.date!r})"


def _builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
