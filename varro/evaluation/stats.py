"""Win rates and paired differences with intervals clustered by headline.

The k roll-out pairs of one headline share its prompt and its outcomes, so
they are not independent: the headline is the unit. Each estimate is the mean
over headlines of the per-headline mean, and its 95% interval is a percentile
bootstrap that resamples whole headlines (a cluster bootstrap), seeded, so the
same results always give the same interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
import numpy as np


class Estimate(msgspec.Struct, frozen=True, kw_only=True):
    value: float
    low: float
    high: float
    clusters: int

    def excludes(self, null: float) -> bool:
        return self.low > null or self.high < null


def clustered(values: Mapping[str, Sequence[float]], *, resamples: int, seed: int) -> Estimate:
    """Mean of per-cluster means, with a 95% percentile cluster-bootstrap interval."""
    means = np.array([float(np.mean(v)) for _, v in sorted(values.items()) if len(v)], dtype=np.float64)
    if means.size == 0:
        raise ValueError("no clusters to estimate from")
    value = float(means.mean())
    if means.size == 1:
        return Estimate(value=value, low=value, high=value, clusters=1)
    rng = np.random.Generator(np.random.PCG64(seed))
    picks = rng.integers(0, means.size, size=(resamples, means.size))
    boot = means[picks].mean(axis=1)
    low, high = np.quantile(boot, [0.025, 0.975])
    return Estimate(value=value, low=float(low), high=float(high), clusters=int(means.size))


def outcome_value(verdict: str) -> float:
    """A pair's contribution to B's win rate: a win 1, a tie half, a loss 0."""
    return {"b": 1.0, "tie": 0.5, "a": 0.0}[verdict]
