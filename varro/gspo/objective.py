"""The policy-gradient objectives: GSPO, GSPO-token and GRPO, with an optional k3 KL penalty.

Notation for one roll-out i with loss tokens t ∈ T_i (response tokens, or all
predicted tokens with `loss_on = "full"`), logp = log π_θ(y_t), old = log π_old(y_t):

GSPO (Zheng et al. 2025), the default:
    s_i   = exp( mean_{t∈T_i} [logp − old] )                      (length-normalised sequence ratio)
    J_i   = min( s_i Â_i, clip(s_i, 1−ε_low, 1+ε_high) Â_i )

GSPO-token: per-token advantages Â_i,t, with the token ratio carrying the
sequence ratio's value and a single token's gradient:
    s_i,t = sg[s_i] · π_θ(y_t) / sg[π_θ(y_t)]
    J_i   = mean_t min( s_i,t Â_i,t, clip(s_i,t, 1−ε_low, 1+ε_high) Â_i,t )
With Â_i,t = Â_i for all t this equals GSPO in value and in gradient.

GRPO (for comparison): token ratios clipped token by token, sequence mean:
    r_i,t = exp(logp − old)
    J_i   = mean_t min( r_i,t Â_i, clip(r_i,t, 1−ε_low, 1+ε_high) Â_i )

Each J_i is multiplied by a behaviour weight w_i (1 unless π_old = "behaviour",
see `varro.gspo.trainer`). The optional KL penalty to a frozen reference uses
the k3 estimator per token, k3 = exp(ref − logp) − (ref − logp) − 1 ≥ 0, averaged
over the loss tokens of each sequence. The minibatch loss is

    L = (1/G) Σ_i [ −w_i J_i + β · mean_t k3_i,t ]

where G is the number of sequences in the whole minibatch: passing that G as
`denom` to every micro-batch makes the micro-batch losses (and their gradients)
sum exactly to the minibatch's.

Clip fractions count where the clip binds (zero gradient): ratio > 1+ε_high
with Â > 0 ("high"), ratio < 1−ε_low with Â < 0 ("low"); per sequence for GSPO,
per token for GSPO-token and GRPO.

Bounded log-ratios. Every ratio above is the exp of a log-ratio, and float32
exp overflows above 88.72: with Â > 0 the clip selects the constant branch but
the gradient through the other is 0 · inf = NaN, with Â < 0 the loss is inf.
So the log-ratio is capped from above at LOG_RATIO_CAP = 10 before the exp, the
way verl caps log s for GSPO: log s_i for GSPO and GSPO-token (the whole token
log-ratio, so GSPO-token still equals GSPO), each token's log r_i,t for GRPO
(verl's token-level PPO clamps at ±20; one cap keeps the variants alike).
- Below the cap nothing changes, bit for bit (min(x, 10) = x): every result at
  |log s| < 10, which is all of GSPO's working range (ε ~ 4e-4), is as before.
- With Â > 0 a ratio above 1+ε_high is clipped anyway (value (1+ε_high)·Â,
  gradient 0), so the cap changes nothing at all for any ε_high < e^10 − 1.
- With Â < 0 and log s > 10 the unclipped branch s·Â is the minimum: capped,
  its value stays at e^10·Â (finite for any batch) and its gradient is 0, so
  the sequence (token, for GRPO) drops out of the step instead of pulling with
  s ≥ 22026 times its usual weight and taking over the global gradient clip.
  A mean token log-ratio of 10 between π_θ and π_old is broken input (stale or
  mismatched log-probs), not a trust-region step; `log_ratio` (and so the
  epoch's abs_log_ratio_max) stays uncapped, so it shows there as |log s| > 10.
No lower cap is needed: exp underflows to 0, whose gradient is 0, not NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

VARIANTS = ("gspo", "gspo_token", "grpo")

LOG_RATIO_CAP = 10.0
"""Upper bound on every log-ratio before its exp (see the module docstring): e^10 ≈ 22026."""


@dataclass(frozen=True)
class ClipRange:
    low: float
    high: float

    def __post_init__(self) -> None:
        if not (0 <= self.low < 1 and self.high >= 0):
            raise ValueError(f"clip range needs 0 <= eps_low < 1 and eps_high >= 0, got {self.low}, {self.high}")


def k3(logp: mx.array, ref: mx.array) -> mx.array:
    """Per-token k3 estimate of KL(π_θ ‖ π_ref) on tokens sampled from π_θ; ≥ 0, 0 where equal."""
    d = ref - logp
    return mx.exp(d) - d - 1.0


def _bounded_exp(log_ratio: mx.array) -> mx.array:
    """exp(min(log_ratio, LOG_RATIO_CAP)): finite, with zero gradient where the cap binds."""
    return mx.exp(mx.minimum(log_ratio, LOG_RATIO_CAP))


def _clipped(ratio: mx.array, adv: mx.array, clip: ClipRange) -> mx.array:
    return mx.minimum(ratio * adv, mx.clip(ratio, 1.0 - clip.low, 1.0 + clip.high) * adv)


def _binds(ratio: mx.array, adv: mx.array, clip: ClipRange) -> tuple[mx.array, mx.array]:
    low = (ratio < 1.0 - clip.low) & (adv < 0)
    high = (ratio > 1.0 + clip.high) & (adv > 0)
    return low, high


def policy_loss(
    logp: mx.array,
    old: mx.array,
    mask: mx.array,
    advantages: mx.array,
    *,
    variant: str,
    clip: ClipRange,
    denom: float | mx.array,
    weights: mx.array | None = None,
    ref: mx.array | None = None,
    beta: float = 0.0,
) -> tuple[mx.array, dict[str, mx.array]]:
    """The loss (see module docstring) and its per-sequence diagnostics.

    logp, old, mask, ref: [B, T]; advantages: [B] (or [B, T] per token for
    "gspo_token"); weights: [B]. Every sequence needs at least one loss token.
    Returned stats: `log_ratio` [B] (mean token log-ratio = log s_i), `clip_low`,
    `clip_high` and `clip_units` (counts: sequences for GSPO, tokens otherwise),
    and with a reference `kl_ref_k3`, `kl_ref_logratio` [B] (per-sequence token means).
    """
    if variant not in VARIANTS:
        raise ValueError(f"train.variant must be one of {VARIANTS}, got {variant!r}")
    if advantages.ndim == 2 and variant != "gspo_token":
        raise ValueError(f"per-token advantages need variant 'gspo_token', not {variant!r}")
    mask = mask.astype(mx.float32)
    n_tokens = mask.sum(axis=1)
    diff = mx.where(mask > 0, logp - old, 0.0)
    log_ratio = diff.sum(axis=1) / n_tokens
    stats: dict[str, mx.array] = {"log_ratio": mx.stop_gradient(log_ratio)}

    if variant == "gspo":
        ratio = _bounded_exp(log_ratio)
        objective = _clipped(ratio, advantages, clip)
        low, high = _binds(ratio, advantages, clip)
        stats["clip_units"] = mx.array(float(ratio.size))
    else:
        if variant == "gspo_token":
            token_log_ratio = mx.stop_gradient(log_ratio)[:, None] + mx.where(
                mask > 0, logp - mx.stop_gradient(logp), 0.0
            )
        else:
            token_log_ratio = diff
        ratio = _bounded_exp(token_log_ratio)
        adv = advantages if advantages.ndim == 2 else mx.broadcast_to(advantages[:, None], ratio.shape)
        objective = (_clipped(ratio, adv, clip) * mask).sum(axis=1) / n_tokens
        low, high = _binds(ratio, adv, clip)
        low, high = low & (mask > 0), high & (mask > 0)
        stats["clip_units"] = mask.sum()
    stats["clip_low"] = low.astype(mx.float32).sum()
    stats["clip_high"] = high.astype(mx.float32).sum()

    per_sequence = -objective if weights is None else -weights * objective
    if ref is not None:
        kl = (k3(logp, mx.where(mask > 0, ref, logp)) * mask).sum(axis=1) / n_tokens
        stats["kl_ref_k3"] = mx.stop_gradient(kl)
        stats["kl_ref_logratio"] = mx.stop_gradient(log_ratio_mean(logp, ref, mask))
        per_sequence = per_sequence + beta * kl
    return per_sequence.sum() / denom, stats


def log_ratio_mean(logp: mx.array, other: mx.array, mask: mx.array) -> mx.array:
    """Per-sequence mean of logp − other over the masked tokens: the plain (k1) KL estimate."""
    mask = mask.astype(mx.float32)
    return mx.where(mask > 0, logp - other, 0.0).sum(axis=1) / mask.sum(axis=1)
