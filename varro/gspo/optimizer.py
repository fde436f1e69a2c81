"""AdamW as one fused elementwise pass per parameter, bit for bit MLX's own.

MLX's `optim.AdamW` evaluates its update as about ten separate elementwise ops
per parameter, each a full pass over memory with its own output buffer. On the
CPU that is memory traffic, not arithmetic: at Qwen3-0.6B's 596M parameters the
update took 7.8 s of a 21.6–26.5 s step, plus 0.7 s to materialise the clipped
gradients; fused, it takes 3.6–5.0 s (BENCHMARKS.md, measured idle).
`FusedAdamW` runs the same op sequence, in the same order and the same float32
roundings, through `mx.compile`, which fuses it into one
kernel: the step reads g, p, m, v once and writes p, m, v once. A parameter
of `IN_PLACE_FROM` elements or more (at Qwen3-0.6B only the 622 MB embedding)
runs the same ops as three single-output kernels instead, which write over the
buffers they replace (`_in_place_step`): the fused kernel's fresh p', m', v'
for that one parameter were the training step's memory peak.

The result is identical to `optim.AdamW(..., bias_correction=True)` (tested bit
for bit, state included, on x86-64), so a run recorded with the stock optimizer
replays with this one. MLX compiles CPU kernels with `g++ -O3` and no `-march`,
so x86-64 gets no fused multiply-add; on aarch64, where GCC may contract a*b + c
into one FMA, the last bits are not checked here. Where MLX's CPU compiler cannot run (it needs `g++` at run time),
`mx.compile` falls back to the unfused ops: slower, same numbers. Fusion happens
on the CPU only; on a GPU the stock ops are already bandwidth-fast and their
kernels there are not the ones this equivalence was checked against.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten

Step = Callable[..., tuple[mx.array, mx.array, mx.array]]


Kernel = Callable[..., mx.array]


def _formulas(b1: float, b2: float, eps: float, weight_decay: float) -> tuple[Kernel, Kernel, Kernel]:
    """m', v' and p' of one parameter, exactly as `optim.AdamW.apply_single` then `optim.Adam.apply_single`
    write them; the gradient first rescaled as `optim.clip_grad_norm` does (exact when the scale is 1)."""

    def first(gradient: mx.array, m: mx.array, scale: mx.array) -> mx.array:
        return b1 * m + (1 - b1) * (gradient * scale)

    def second(gradient: mx.array, v: mx.array, scale: mx.array) -> mx.array:
        return b2 * v + (1 - b2) * mx.square(gradient * scale)

    def third(parameter: mx.array, m: mx.array, v: mx.array, lr: mx.array, c1: mx.array, c2: mx.array) -> mx.array:
        return parameter * (1 - lr * weight_decay) - (c1 * m) / (mx.sqrt(v) * c2 + eps)

    return first, second, third


def _step_of(first: Kernel, second: Kernel, third: Kernel) -> Step:
    def step(
        gradient: mx.array,
        parameter: mx.array,
        m: mx.array,
        v: mx.array,
        lr: mx.array,
        c1: mx.array,
        c2: mx.array,
        scale: mx.array,
    ) -> tuple[mx.array, mx.array, mx.array]:
        m, v = first(gradient, m, scale), second(gradient, v, scale)
        return third(parameter, m, v, lr, c1, c2), m, v

    return step


def _adamw_step(b1: float, b2: float, eps: float, weight_decay: float) -> Step:
    """The update of one parameter (g, p, m, v, lr, c1, c2, scale) -> (p', m', v'), as MLX's AdamW computes it."""
    return _step_of(*_formulas(b1, b2, eps, weight_decay))


def _in_place_step(b1: float, b2: float, eps: float, weight_decay: float) -> Step:
    """`_adamw_step` with each of m', v' and p' compiled as its own kernel of one output.

    MLX lets a compiled kernel write its output into an input's buffer only
    when the input has no other holder, and a kernel with three outputs holds
    each input three times: the fused step therefore allocates fresh p', m', v'
    while p, m, v are still alive, 3 × 622 MB for Qwen3-0.6B's embedding, the
    step's memory peak. One output each, every kernel writes over the buffer
    it replaces. It costs three more passes over the parameter (the gradient
    is read twice, m' and v' once more), so it is used for large parameters
    only (`FusedAdamW.in_place_from`). Same ops, same order: same bits.
    """
    first, second, third = _formulas(b1, b2, eps, weight_decay)
    return _step_of(mx.compile(first), mx.compile(second), mx.compile(third))


IN_PLACE_FROM = 1 << 25
"""Parameters of at least this many elements (128 MB in float32) update in place: at Qwen3-0.6B, the embedding."""


class FusedAdamW(optim.AdamW):
    """`optim.AdamW` with bias correction, its per-parameter update fused into one kernel on the CPU."""

    def __init__(
        self,
        learning_rate: float,
        weight_decay: float = 0.01,
        *,
        fuse: bool | None = None,
        in_place_from: int = IN_PLACE_FROM,
    ) -> None:
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, bias_correction=True)
        b1, b2 = self.betas
        step = _adamw_step(b1, b2, self.eps, self.weight_decay)
        self.fused = mx.default_device() == mx.cpu if fuse is None else fuse
        self._step: Step = mx.compile(step) if self.fused else step
        self._in_place: Step = _in_place_step(b1, b2, self.eps, self.weight_decay) if self.fused else step
        self.in_place_from = in_place_from
        self._scale = mx.array(1.0)

    def clip_and_update(self, model: Any, gradients: dict[str, Any], max_norm: float) -> mx.array:
        """`optim.clip_grad_norm` then `update`, bit for bit, without materialising the clipped gradients.

        The rescaling happens inside the fused kernel, so a step never holds a
        second copy of every gradient (2.4 GB at Qwen3-0.6B) nor spends a pass
        writing it. Returns the pre-clip global norm, as `clip_grad_norm` does.
        Float32 gradients only: the trainer's (`varro.model.precision`).
        """
        if max_norm < 0:
            raise ValueError(f"max_norm should be >= 0, got {max_norm}")
        leaves = [leaf for _, leaf in cast(list[tuple[str, mx.array]], tree_flatten(gradients))]
        if any(leaf.dtype != mx.float32 for leaf in leaves):
            raise TypeError("clip_and_update takes float32 gradients; the trainer trains in float32")
        norm_squared = mx.array(0.0)  # summed in tree order, as clip_grad_norm's tree_reduce does (0 + x is exact)
        for leaf in leaves:
            norm_squared = norm_squared + leaf.square().sum()
        total_norm = mx.sqrt(norm_squared)
        self._scale = mx.minimum(max_norm / (total_norm + 1e-6), 1.0)
        try:
            self.update(model, gradients)
        finally:
            self._scale = mx.array(1.0)
        return total_norm

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict[str, Any]) -> mx.array:
        lr = self.learning_rate.astype(gradient.dtype)
        b1, b2 = self.betas
        c1 = (lr / (1 - b1**self.step)).astype(gradient.dtype)
        c2 = mx.rsqrt(1 - b2**self.step).astype(gradient.dtype)
        scale = self._scale.astype(gradient.dtype)
        step = self._in_place if parameter.size >= self.in_place_from else self._step
        updated, state["m"], state["v"] = step(gradient, parameter, state["m"], state["v"], lr, c1, c2, scale)
        return updated
