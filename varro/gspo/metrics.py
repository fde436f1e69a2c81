"""An epoch's metrics: tallied while the minibatch updates run, measured once they have.

Each metric is defined once, on its field of `events.schema.EpochMetrics` (the
recorded fact); this module computes them as defined there, so the training loop
(`varro.gspo.trainer`) only hands over what it has: the per-micro-batch stats of
`policy_loss`, each step's loss and gradient norm, and the log-probs before and
after the epoch.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from events.schema import EpochMetrics
from varro.gspo.batch import TrainingSequence
from varro.gspo.objective import k3


@dataclass
class UpdateTally:
    """What the minibatch updates leave for the metrics, collected as they run."""

    with_reference: bool
    """Whether the loss saw a reference (β > 0): only then are the kl_ref stats there."""
    log_ratios: list[np.ndarray] = field(default_factory=list)
    kl_ref_k3: list[np.ndarray] = field(default_factory=list)
    kl_ref_logratio: list[np.ndarray] = field(default_factory=list)
    clip_low: float = 0.0
    clip_high: float = 0.0
    clip_units: float = 0.0
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    loop_s: float = 0.0
    """Seconds spent in the update loop (for tokens_per_s)."""

    def micro_batches(self, stats: Sequence[dict[str, np.ndarray]]) -> None:
        """One minibatch's per-micro-batch stats, as `minibatch_gradient` returns them."""
        for st in stats:
            self.log_ratios.append(st["log_ratio"])
            self.clip_low += float(st["clip_low"])
            self.clip_high += float(st["clip_high"])
            self.clip_units += float(st["clip_units"])
            if self.with_reference:
                self.kl_ref_k3.append(st["kl_ref_k3"])
                self.kl_ref_logratio.append(st["kl_ref_logratio"])

    def step(self, loss: float, grad_norm: float) -> None:
        """One optimizer step: its minibatch loss and pre-clip global gradient norm."""
        self.losses.append(loss)
        self.grad_norms.append(grad_norm)


def preferred(groups: Sequence[Sequence[TrainingSequence]]) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence (groups concatenated): is its reward above, and below, its group's mean."""
    above = np.concatenate([np.asarray([s.reward for s in g]) > np.mean([s.reward for s in g]) for g in groups])
    below = np.concatenate([np.asarray([s.reward for s in g]) < np.mean([s.reward for s in g]) for g in groups])
    return above, below


def peak_rss_mb() -> float:
    """The process's resident-set high-water mark (ru_maxrss is bytes on macOS, KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def measure(
    groups: Sequence[Sequence[TrainingSequence]],
    advantages: np.ndarray,
    old: Sequence[np.ndarray],
    new: Sequence[np.ndarray],
    tally: UpdateTally,
    *,
    learning_rate: float,
    started: float,
) -> EpochMetrics:
    """The epoch's `EpochMetrics`, from the tally and the log-probs under π_old (`old`) and
    the new policy (`new`); `started` is the epoch's `time.perf_counter()` start."""
    seqs = [s for g in groups for s in g]
    above, below = preferred(groups)
    gains = np.array([float(np.mean(n.astype(np.float64) - o)) for n, o in zip(new, old, strict=True)])
    kl_k3 = np.array([float(np.mean(np.array(k3(mx.array(n), mx.array(o))))) for n, o in zip(new, old, strict=True)])
    improvement = float(gains[above].mean() - gains[below].mean()) if above.any() and below.any() else 0.0
    abs_log_s = np.abs(np.concatenate(tally.log_ratios))
    raw = [s.raw_score for s in seqs if s.raw_score is not None]
    tokens = sum(s.length for s in seqs)
    return EpochMetrics(
        steps=len(tally.losses),
        sequences=len(seqs),
        tokens=tokens,
        avg_reward=float(np.mean([s.reward for s in seqs])),
        avg_reward_unscaled=float(np.mean(raw)) if raw else float(np.mean([s.rank for s in seqs])),
        avg_reward_unscaled_kind="raw_score" if raw else "rank",
        mean_abs_advantage=float(np.mean(np.abs(advantages))),
        loss=float(np.mean(tally.losses)),
        kl_old_k3=float(kl_k3.mean()),
        kl_old_logratio=float(gains.mean()),
        kl_ref_k3=float(np.concatenate(tally.kl_ref_k3).mean()) if tally.kl_ref_k3 else None,
        kl_ref_logratio=float(np.concatenate(tally.kl_ref_logratio).mean()) if tally.kl_ref_logratio else None,
        clip_frac_low=tally.clip_low / tally.clip_units,
        clip_frac_high=tally.clip_high / tally.clip_units,
        abs_log_ratio_q50=float(np.quantile(abs_log_s, 0.5)),
        abs_log_ratio_q90=float(np.quantile(abs_log_s, 0.9)),
        abs_log_ratio_max=float(abs_log_s.max()),
        grad_norm=float(np.mean(tally.grad_norms)),
        learning_rate=learning_rate,
        tokens_per_s=tokens / tally.loop_s if tally.loop_s > 0 else 0.0,
        wall_s=time.perf_counter() - started,
        peak_memory_mb=mx.get_peak_memory() / 2**20,
        peak_rss_mb=peak_rss_mb(),
        improvement=improvement,
    )
