"""Group-normalised advantages, optionally centred on a running (EMA) reward baseline.

GSPO compares each roll-out with its siblings: the G roll-outs of one headline
form a group, and

    Â_i = (r_i − mean_g(r)) / (std_g(r; ddof) + eps)

with `ddof` and `eps` taken from the config (`train.adv_ddof`,
`train.adv_eps`), never implied. The peers differ, and the GSPO paper does not
say which std it means:
- TRL's GRPOTrainer (scale_rewards = "group", its default): the sample std,
  ddof = 1 (torch.std), plus eps = 1e-4;
- verl's GRPO advantage: ddof = 1 (torch.std), plus eps = 1e-6;
- ddof = 0 (population std) matches neither: for G = 8 its |Â| is
  sqrt(8/7) ≈ 1.069 times theirs.
`tests/test_gspo_advantages.py` holds Varro's numbers against TRL's and verl's
formulas. A group whose rewards are all equal carries no preference, so its
advantages are exactly 0 (the numerator is forced to 0 rather than left to
rounding; no NaN even for G = 1, where verl instead uses mean 0 and std 1).

EMA baseline (`train.ema_baseline = d`). The group mean is replaced by a
baseline b that moves slowly across days:

    Â_i = (r_i − b) / (std_day(r; ddof) + eps),   b = the EMA carried in from the parent checkpoint
    b_next = d · b + (1 − d) · mean_day(r)         (stored in the new checkpoint's trainer state)

On the first day (no EMA yet) b = mean_day(r). Once the centre is not the group
mean, a group's own std no longer measures spread around the centre (a group of
equal rewards would divide a non-zero numerator by eps), so the scale is the
std of all of the day's rewards; a day whose rewards are all equal has no scale
and gets zero advantages. With rank-derived rewards every group's mean is 0.5 by
construction, so the EMA baseline only changes anything for judges whose rewards
are not a fixed function of rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Advantages:
    values: list[np.ndarray]
    """One float64 array per group, aligned with that group's rewards."""
    ema_baseline: float | None
    """The baseline to carry into the next checkpoint (None when the EMA is off)."""


def _std(values: np.ndarray, ddof: int) -> float:
    if values.size - ddof <= 0:
        return 0.0
    return float(np.std(values, ddof=ddof))


def group_advantages(rewards: Sequence[Sequence[float]], *, ddof: int, eps: float) -> list[np.ndarray]:
    """Â within each group: centre on the group mean, scale by its std."""
    if eps <= 0:
        raise ValueError(f"train.adv_eps must be > 0, got {eps}")
    out = []
    for group in rewards:
        r = np.asarray(group, dtype=np.float64)
        if r.size == 0:
            raise ValueError("a reward group is empty")
        centred = r - r.mean()
        if np.all(r == r[0]):
            centred = np.zeros_like(r)
        out.append(centred / (_std(r, ddof) + eps))
    return out


def ema_advantages(
    rewards: Sequence[Sequence[float]], *, previous: float | None, decay: float, ddof: int, eps: float
) -> Advantages:
    """Â against a running baseline (see the module docstring for the exact rule)."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"train.ema_baseline must be in [0, 1), got {decay}")
    if eps <= 0:
        raise ValueError(f"train.adv_eps must be > 0, got {eps}")
    groups = [np.asarray(g, dtype=np.float64) for g in rewards]
    if not groups or any(g.size == 0 for g in groups):
        raise ValueError("a reward group is empty")
    day = np.concatenate(groups)
    day_mean = float(day.mean())
    baseline = day_mean if previous is None else float(previous)
    if np.all(day == day[0]):
        values = [np.zeros_like(g) for g in groups]
    else:
        scale = _std(day, ddof) + eps
        values = [(g - baseline) / scale for g in groups]
    return Advantages(values=values, ema_baseline=decay * baseline + (1.0 - decay) * day_mean)


def compute_advantages(
    rewards: Sequence[Sequence[float]],
    *,
    ddof: int,
    eps: float,
    ema_decay: float | None,
    previous_ema: float | None,
) -> Advantages:
    """The configured advantage rule: group mean (default) or EMA baseline."""
    if ema_decay is None:
        return Advantages(values=group_advantages(rewards, ddof=ddof, eps=eps), ema_baseline=None)
    return ema_advantages(rewards, previous=previous_ema, decay=ema_decay, ddof=ddof, eps=eps)
