"""One day's GSPO epoch: π_old pass, shuffled minibatch updates, after-epoch measurement.

The loop, in the order it runs:

1. The policy is prepared for training: cast to float32 master weights (a bf16
   weight cannot absorb an update smaller than its spacing, which at lr ~1e-6
   is nearly every update), or wrapped with LoRA adapters (the base frozen).
   LoRA adapters (mlx_lm.tuner, last `lora_layers` blocks) are fused into the
   weights at the end of the epoch, so the checkpoint is a plain model that
   stock mlx_lm.load reads; each day therefore starts a new adapter, whose
   AdamW state starts fresh (recorded as optimizer_state = "fresh").
2. π_old pass: log-probs of every sequence under the weights as they are
   before any update (the parent checkpoint), in float32, no gradient.
   - `pi_old = "recompute"` (default): these are π_old. The first minibatch is
     then exactly on-policy (s_i = 1), later ones see the ratio move.
   - `pi_old = "behaviour"`: the roll-outs were sampled by the generating
     checkpoint (possibly older, and at the sampling temperature), whose
     log-probs μ were recorded. The clip stays anchored at the recomputed π_old
     (a trust region around the weights being updated), and the gap between μ
     and π_old is corrected by a truncated, length-normalised sequence weight
     multiplying the objective (decoupled PPO, Hilton et al. 2022):
        w_i = min( exp( mean_{t∈response} [log π_old − log μ] ), is_cap ).
     Trade-off: "recompute" ignores that the data came from another policy
     (biased when the generator differs, no extra variance); "behaviour"
     removes that bias up to the truncation, at the cost of variance from w and
     of trusting the recorded μ (top-p/top-k truncation at sampling is not in μ).
   With β > 0 the frozen reference's log-probs are computed in the same pass,
   on float32 weights like the policy's (`varro.model.precision`; the
   reference itself, often the model cache's bf16 base, is left as it was),
   so a reference equal to the parent (day 1) gives log-probs equal to π_old's
   bit for bit, not bf16 arithmetic's; with β = 0 no reference is needed or
   loaded.
3. Advantages per headline group (`varro.gspo.advantages`).
4. The day's sequences are shuffled with the recorded seed into
   `minibatches` parts; each part is one optimizer step, accumulated over
   micro-batches of `microbatch_size` whose losses are each divided by the
   part's sequence count, so k micro-batches give exactly the part's gradient.
   Gradients are clipped to `grad_clip` (global norm), then AdamW (with bias
   correction, as in PyTorch) updates the trainable weights, as one fused kernel per
   parameter that is bit for bit `optim.AdamW` (`varro.gspo.optimizer`).
5. After the epoch, one more pass measures the new policy against π_old.

Metrics: each is defined once, on its field of `events.schema.EpochMetrics`;
`varro.gspo.metrics` tallies them as the updates run and measures them after.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten
from mlx_lm.tuner.lora import LoRALinear
from mlx_lm.tuner.utils import linear_to_lora_layers

from events.errors import PermanentError
from events.schema import EpochMetrics
from varro.config import TrainConfig
from varro.gspo.advantages import compute_advantages
from varro.gspo.batch import Batch, TrainingSequence, collate, microbatches, plan_minibatches
from varro.gspo.logprobs import token_logprobs
from varro.gspo.metrics import UpdateTally, measure
from varro.gspo.objective import ClipRange, policy_loss
from varro.gspo.optimizer import FusedAdamW
from varro.model.forward import Kernels
from varro.model.precision import float32_weights


class OptimizerStateError(PermanentError, ValueError):
    """The saved optimizer state does not fit the parameters being trained."""


@dataclass(frozen=True)
class PriorState:
    """What the parent checkpoint hands to the next epoch."""

    optimizer: dict[str, mx.array] | None = None
    step: int = 0
    ema_baseline: float | None = None


@dataclass
class EpochResult:
    model: nn.Module
    """The trained policy: float32, LoRA adapters fused into the weights."""
    optimizer_state: dict[str, mx.array]
    """Flattened AdamW state to save beside the checkpoint (empty for LoRA)."""
    optimizer_origin: str
    """'resumed', 'reset' (on purpose, train.reset_optimizer) or 'fresh'."""
    step: int
    """Optimizer steps in this lineage so far, including this epoch's."""
    ema_baseline: float | None
    metrics: EpochMetrics


def epoch_kernels(cfg: TrainConfig, kernels: Kernels) -> Kernels:
    """The kernels an epoch runs on: as asked, except MLX's when the step is compiled (NumPy cannot be traced)."""
    return "mlx" if cfg.compile else kernels


def prepare_policy(model: nn.Module, cfg: TrainConfig, seed: int) -> nn.Module:
    """float32 master weights, and LoRA adapters (seeded) when configured."""
    if any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for m in model.modules()):
        raise TypeError("cannot train a quantized model: start from a float checkpoint")
    model.set_dtype(mx.float32)
    if cfg.lora:
        mx.random.seed(seed)
        model.freeze()
        linear_to_lora_layers(model, cfg.lora_layers, {"rank": cfg.lora_rank, "scale": cfg.lora_scale, "dropout": 0.0})
    model.train()
    return model


def fuse_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base weight so stock mlx_lm.load reads the result."""
    fused = [(name, m.fuse()) for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    if fused:
        model.update_modules(tree_unflatten(fused))
    model.unfreeze()
    return model


def sequence_logprobs(
    model: nn.Module,
    seqs: Sequence[TrainingSequence],
    *,
    loss_on: str,
    chunk: int,
    batch_size: int,
    temperature: float = 1.0,
    kernels: Kernels = "auto",
) -> list[np.ndarray]:
    """float32 log-probs of each sequence's loss positions (see `loss_span`), no gradient."""
    out: list[np.ndarray] = []
    for i in range(0, len(seqs), batch_size):
        part = seqs[i : i + batch_size]
        batch = collate(part, loss_on=loss_on)
        lp = np.array(
            token_logprobs(
                model, mx.array(batch.tokens), chunk=chunk, start=batch.start, temperature=temperature, kernels=kernels
            )
        )
        for b, s in enumerate(part):
            first, n = loss_span(s, loss_on)
            out.append(lp[b, first - batch.start : first - batch.start + n].copy())
    return out


def loss_span(seq: TrainingSequence, loss_on: str) -> tuple[int, int]:
    """(first column, number of columns) of a sequence's loss positions."""
    p = len(seq.prompt_ids)
    if loss_on == "full":
        return 0, seq.length - 1
    return p - 1, len(seq.response_ids)


def align(batch: Batch, seqs: Sequence[TrainingSequence], values: Sequence[np.ndarray], loss_on: str) -> np.ndarray:
    """Place per-sequence loss-position values into a batch's columns (0 elsewhere)."""
    out = np.zeros(batch.loss_mask.shape, dtype=np.float32)
    for b, (s, v) in enumerate(zip(seqs, values, strict=True)):
        first, n = loss_span(s, loss_on)
        out[b, first - batch.start : first - batch.start + n] = v
    return out


def behaviour_weights(seqs: Sequence[TrainingSequence], old: Sequence[np.ndarray], *, cap: float) -> np.ndarray:
    """w_i = min(exp(mean_{t∈response}[log π_old − log μ]), cap), μ = the recorded behaviour log-probs."""
    out = np.empty(len(seqs), dtype=np.float32)
    for i, s in enumerate(seqs):
        recomputed = old[i][-len(s.response_ids) :].astype(np.float64)
        gap = float(np.mean(recomputed - np.asarray(s.behaviour_logprobs, dtype=np.float64)))
        out[i] = cap if gap >= np.log(cap) else np.exp(gap)
    return out


@dataclass(frozen=True)
class EpochData:
    """The day's sequences with everything fixed before the first update (per sequence)."""

    seqs: Sequence[TrainingSequence]
    old: Sequence[np.ndarray]
    ref: Sequence[np.ndarray] | None
    advantages: np.ndarray
    weights: np.ndarray


GradTree = dict[str, Any]
"""Gradients shaped like `model.trainable_parameters()`: nested dicts and lists of arrays (an MLX tree)."""

LossAndGrad = Callable[
    [mx.array, mx.array, mx.array, mx.array, mx.array, mx.array | None, mx.array, int],
    tuple[tuple[mx.array, dict[str, mx.array]], GradTree],
]
"""(tokens, loss mask, π_old, advantages, weights, reference, denominator, start column) ->
((loss, `policy_loss` stats), gradients)."""


def make_loss_and_grad(
    model: nn.Module, cfg: TrainConfig, *, temperature: float = 1.0, kernels: Kernels = "auto"
) -> LossAndGrad:
    """The micro-batch loss and its gradient w.r.t. the trainable parameters (compiled if configured).

    A compiled step always runs MLX's kernels (`epoch_kernels`).
    """
    clip = ClipRange(cfg.eps_low, cfg.eps_high)
    kernels = epoch_kernels(cfg, kernels)

    def micro_loss(
        tokens: mx.array,
        mask: mx.array,
        old_lp: mx.array,
        adv: mx.array,
        w: mx.array,
        ref_lp: mx.array | None,
        denom: mx.array,
        start: int,
    ) -> tuple[mx.array, dict[str, mx.array]]:
        logp = token_logprobs(
            model, tokens, chunk=cfg.logprob_chunk, start=start, temperature=temperature, kernels=kernels
        )
        return policy_loss(
            logp, old_lp, mask, adv, variant=cfg.variant, clip=clip, denom=denom, weights=w, ref=ref_lp, beta=cfg.beta
        )

    loss_and_grad: LossAndGrad = nn.value_and_grad(model, micro_loss)
    if cfg.compile:
        loss_and_grad = mx.compile(loss_and_grad, inputs=model.state, outputs=model.state)
    return loss_and_grad


def minibatch_gradient(
    loss_and_grad: LossAndGrad, data: EpochData, part: np.ndarray, cfg: TrainConfig
) -> tuple[float, GradTree, list[dict[str, np.ndarray]]]:
    """The loss and gradient of one minibatch, accumulated over micro-batches.

    Each micro-batch's loss is divided by the minibatch's sequence count, so the
    sum over micro-batches is exactly the loss (and gradient) of the minibatch
    taken as one batch. Returns (loss, grads, per-micro-batch numpy stats).
    `part` is never empty (`plan_minibatches`).
    """
    denom = mx.array(float(len(part)))
    grads: GradTree | None = None
    total = 0.0
    stats: list[dict[str, np.ndarray]] = []
    for idx in microbatches(part, cfg.microbatch_size):
        seqs = [data.seqs[i] for i in idx]
        batch = collate(seqs, loss_on=cfg.loss_on)
        ref = mx.array(align(batch, seqs, [data.ref[i] for i in idx], cfg.loss_on)) if data.ref is not None else None
        (loss, st), g = loss_and_grad(
            mx.array(batch.tokens),
            mx.array(batch.loss_mask),
            mx.array(align(batch, seqs, [data.old[i] for i in idx], cfg.loss_on)),
            mx.array(data.advantages[idx]),
            mx.array(data.weights[idx]),
            ref,
            denom,
            batch.start,
        )
        grads = g if grads is None else tree_map(mx.add, grads, g)
        mx.eval(loss, st, grads)
        total += cast("float", loss.item())  # the loss is a float32 scalar: its item is a Python float
        stats.append({k: np.array(v) for k, v in st.items()})
    if grads is None:
        raise ValueError("a minibatch without sequences")
    return total, grads, stats


def _optimizer(model: nn.Module, cfg: TrainConfig, prior: PriorState) -> tuple[FusedAdamW, str]:
    opt = FusedAdamW(learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay)
    opt.init(model.trainable_parameters())
    saved = prior.optimizer
    if cfg.lora or not saved:
        return opt, "fresh"
    if cfg.reset_optimizer:
        return opt, "reset"
    # without a destination, tree_flatten gives a list of (path, array)
    flat = cast("list[tuple[str, mx.array]]", tree_flatten(opt.state))
    expected = {k: v.shape for k, v in flat if k != "learning_rate"}
    found = {k: v.shape for k, v in saved.items() if k != "learning_rate"}
    if expected != found:
        missing = sorted(set(expected) ^ set(found))[:3]
        raise OptimizerStateError(
            "the parent checkpoint's optimizer state does not match the trainable parameters "
            f"(e.g. {missing or 'shapes differ'}); set train.reset_optimizer = true to start it afresh"
        )
    opt.state = tree_unflatten(list(saved.items()))
    opt.learning_rate = cfg.learning_rate
    return opt, "resumed"


def _reference(cfg: TrainConfig, reference: nn.Module | None) -> nn.Module | None:
    """The frozen reference the loss needs (β > 0), else None: with β = 0 none is used."""
    if not cfg.beta > 0:
        return None
    if reference is None:
        raise ValueError("train.beta > 0 needs a reference model")
    return reference


def train_epoch(
    model: nn.Module,
    groups: Sequence[Sequence[TrainingSequence]],
    cfg: TrainConfig,
    *,
    seed: int,
    prior: PriorState = PriorState(),
    reference: nn.Module | None = None,
    temperature: float = 1.0,
    kernels: Kernels = "auto",
) -> EpochResult:
    """Run one epoch on the day's groups; `model` is trained in place (pass a private copy).

    `temperature` is the roll-outs' sampling temperature: every policy log-prob
    (π_θ, π_old, reference) is taken at it, as the behaviour log-probs were.
    `kernels` (`varro.model.forward`) serves all of them alike, so π_θ = π_old
    exactly before the first update.
    """
    frozen = _reference(cfg, reference)
    if cfg.pi_old == "behaviour" and cfg.is_cap <= 0:
        raise ValueError(f"train.is_cap must be > 0, got {cfg.is_cap}")
    if cfg.grad_clip <= 0 or cfg.learning_rate <= 0:
        raise ValueError(
            f"train.grad_clip and train.learning_rate must be > 0, got {cfg.grad_clip}, {cfg.learning_rate}"
        )
    started = time.perf_counter()
    mx.reset_peak_memory()
    mx.random.seed(seed)
    model = prepare_policy(model, cfg, seed)
    seqs = [s for g in groups for s in g]
    kernels = epoch_kernels(cfg, kernels)

    def logprobs(policy: nn.Module) -> list[np.ndarray]:
        return sequence_logprobs(
            policy,
            seqs,
            loss_on=cfg.loss_on,
            chunk=cfg.logprob_chunk,
            batch_size=cfg.microbatch_size,
            temperature=temperature,
            kernels=kernels,
        )

    # π_old (and the reference's log-probs with β > 0), before any update
    old = logprobs(model)
    ref = None
    if frozen is not None:
        with float32_weights(frozen):
            ref = logprobs(frozen)
    weights = (
        behaviour_weights(seqs, old, cap=cfg.is_cap)
        if cfg.pi_old == "behaviour"
        else np.ones(len(seqs), dtype=np.float32)
    )

    # advantages per headline group
    adv = compute_advantages(
        [[s.reward for s in g] for g in groups],
        ddof=cfg.adv_ddof,
        eps=cfg.adv_eps,
        ema_decay=cfg.ema_baseline,
        previous_ema=prior.ema_baseline,
    )
    advantages = np.concatenate(adv.values).astype(np.float32)
    data = EpochData(seqs=seqs, old=old, ref=ref, advantages=advantages, weights=weights)

    # one optimizer step per minibatch
    opt, origin = _optimizer(model, cfg, prior)
    loss_and_grad = make_loss_and_grad(model, cfg, temperature=temperature, kernels=kernels)
    tally = UpdateTally(with_reference=ref is not None)
    loop_started = time.perf_counter()
    for part in plan_minibatches(len(seqs), cfg.minibatches, seed):
        loss, grads, stats = minibatch_gradient(loss_and_grad, data, part, cfg)
        tally.micro_batches(stats)
        norm = opt.clip_and_update(model, grads, cfg.grad_clip)
        mx.eval(model.parameters(), opt.state)
        # Dropped now, not when the next minibatch's gradients are assigned: else both
        # sets are alive through the next backward pass (2.4 GB at Qwen3-0.6B).
        del grads
        tally.step(loss, float(np.asarray(norm)))  # the float32 norm, exactly
    tally.loop_s = time.perf_counter() - loop_started

    # measure the new policy against π_old
    new = logprobs(model)
    model = fuse_lora(model) if cfg.lora else model
    metrics = measure(groups, advantages, old, new, tally, learning_rate=cfg.learning_rate, started=started)
    return EpochResult(
        model=model,
        optimizer_state={} if cfg.lora else dict(tree_flatten(opt.state)),
        optimizer_origin=origin,
        step=prior.step + len(tally.losses),
        ema_baseline=adv.ema_baseline,
        metrics=metrics,
    )
