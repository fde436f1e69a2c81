"""Where a GSPO training step's time and memory go, component by component, at a given model shape.

    .venv/bin/python -m bench.profile_train [--model qwen3-0.6b] [--batch 4] [--prompt 48] [--response 80]

Each component of the step the trainer runs (`varro.gspo.trainer`,
`varro.model.forward.training_hidden_states`, `varro.gspo.logprobs`,
`varro.gspo.optimizer`) is timed on its own, forward and backward together
(`mx.vjp` with a fixed cotangent), at the shapes one micro-batch gives it, and
multiplied by how often a step runs it (28 layers at Qwen3-0.6B). The whole
step is timed too, so the sum of the parts shows what the parts miss (the
reshapes and transposes between them, the gradient accumulation, dispatch).
Each time is the median of `--repeats` runs after one warm-up; every component
gets its FLOP count, so its throughput can be held against the matmuls' own.

Memory: the bytes of the parameters, gradients and AdamW state, MLX's peak over
forward+backward alone, and over a whole step with the update.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import varro  # noqa: F401  (first: preloads OpenBLAS before anything imports mlx)

# isort: split
import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten
from mlx_lm.models import qwen3

from bench.bench_train import COMMON, MODELS
from varro.gspo.logprobs import chunk_head, keeps_logits
from varro.gspo.optimizer import FusedAdamW
from varro.model.forward import _MASKED, _softmax_fn, _swiglu_fn

GB = 1e9


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, float]:
    """(median, min, max) seconds of `mx.eval(fn())` after one warm-up."""
    mx.eval(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def fwd_bwd(f: Callable[..., mx.array], *primals: mx.array) -> Callable[[], Any]:
    """A thunk running f forward and its vector-Jacobian product w.r.t. every primal."""
    out = f(*primals)
    mx.eval(out)
    cotangent = mx.random.normal(out.shape).astype(out.dtype)
    mx.eval(cotangent)
    return lambda: mx.vjp(f, list(primals), [cotangent])


def randn(*shape: int) -> mx.array:
    a = mx.random.normal(shape) * 0.02
    mx.eval(a)
    return a


def components(shape: dict[str, int], batch: int, length: int, chunk: int) -> list[tuple[str, int, Callable, float]]:
    """(name, runs per step, thunk, FLOPs of one run forward+backward)."""
    h, inter, vocab = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    heads, kv, hd = shape["num_attention_heads"], shape["num_key_value_heads"], shape["head_dim"]
    layers = shape["num_hidden_layers"]
    tokens = batch * length
    x = randn(batch, length, h)
    rows: list[tuple[str, int, Callable, float]] = []

    def linear(name: str, fan_in: int, fan_out: int, count: int) -> None:
        inp, weight = randn(batch, length, fan_in), randn(fan_out, fan_in)
        rows.append((name, count, fwd_bwd(lambda a, w: a @ w.T, inp, weight), 6.0 * tokens * fan_in * fan_out))

    linear("q_proj", h, heads * hd, layers)
    linear("k_proj + v_proj", h, kv * hd, 2 * layers)
    linear("o_proj", heads * hd, h, layers)
    linear("gate_proj + up_proj", h, inter, 2 * layers)
    linear("down_proj", inter, h, layers)

    # attention core as training_hidden_states runs it: masked scores, NumPy softmax, values
    q, k, v = randn(batch, heads, length, hd), randn(batch, kv, length, hd), randn(batch, kv, length, hd)
    causal = mx.arange(length)[:, None] >= mx.arange(length)[None]
    repeats = heads // kv

    def core(q: mx.array, k: mx.array, v: mx.array) -> mx.array:
        grouped = (q * hd**-0.5).reshape(batch, kv, repeats, length, hd)
        scores = mx.where(causal, grouped @ k[:, :, None].swapaxes(-1, -2), float(_MASKED))
        probs = _softmax_fn(scores)
        return (probs @ v[:, :, None]).reshape(batch, heads, length, hd)

    attn_flops = 2 * 2.0 * batch * heads * length * length * hd * 3  # QK^T and PV, forward + 2x backward
    rows.append(("attention core (NumPy softmax)", layers, fwd_bwd(core, q, k, v), attn_flops))

    def sdpa(q: mx.array, k: mx.array, v: mx.array) -> mx.array:
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=hd**-0.5, mask="causal")

    rows.append(("  (for comparison: MLX's SDPA, not used)", 0, fwd_bwd(sdpa, q, k, v), attn_flops))

    norm_w, head_w = mx.ones((h,)), mx.ones((hd,))
    rows.append(
        (
            "RMSNorm (input, post-attention)",
            2 * layers,
            fwd_bwd(lambda a, w: mx.fast.rms_norm(a, w, 1e-6), x, norm_w),
            0,
        )
    )
    rows.append(
        (
            "RMSNorm (q_norm + k_norm)",
            layers,
            fwd_bwd(
                lambda a, b, w: mx.fast.rms_norm(a, w, 1e-6) + mx.fast.rms_norm(b, w, 1e-6).sum(),
                q,
                randn(*k.shape),
                head_w,
            ),
            0,
        )
    )
    rows.append(
        (
            "RoPE (q + k)",
            layers,
            fwd_bwd(
                lambda a, b: (
                    mx.fast.rope(a, hd, traditional=False, base=1e6, scale=1.0, offset=0)
                    + mx.fast.rope(b, hd, traditional=False, base=1e6, scale=1.0, offset=0).sum()
                ),
                q,
                k,
            ),
            0,
        )
    )
    gate, up = randn(batch, length, inter), randn(batch, length, inter)
    rows.append(("SwiGLU activation (NumPy)", layers, fwd_bwd(lambda g, u: _swiglu_fn(g, u), gate, up), 0))
    rows.append(("residual adds", 2 * layers, fwd_bwd(lambda a, b: a + b, x, randn(*x.shape)), 0))
    rows.append(
        (
            "head transposes (q, k, v, out: 3 q-sized)",
            3 * layers,
            fwd_bwd(
                lambda a: a.reshape(batch, length, heads, hd).transpose(0, 2, 1, 3) * 1.0,
                randn(batch, length, heads * hd),
            ),
            0,
        )
    )

    table = randn(vocab, h)
    ids = mx.array(np.random.default_rng(0).integers(0, vocab, (batch, length)))
    rows.append(("embedding lookup", 1, fwd_bwd(lambda w: w[ids], table), 0))

    hidden, targets = randn(batch, length - 1, h), ids[:, 1:]
    inv_temp = mx.array(1.0)

    def head(hid: mx.array, w: mx.array, fn: Callable) -> mx.array:
        pieces = [
            fn(hid[:, i : i + chunk], w, targets[:, i : i + chunk], inv_temp) for i in range(0, length - 1, chunk)
        ]
        return mx.concatenate(pieces, axis=1)

    head_flops = 2.0 * batch * (length - 1) * h * vocab
    kept = keeps_logits(batch, length - 1, vocab)
    kernels = "numpy" if mx.default_device() == mx.cpu else "mlx"  # what model.kernels "auto" picks for Qwen3
    rows.append(
        (
            f"output projection + log-softmax ({kernels}, {'logits kept' if kept else 'checkpointed'}, as trained)",
            1,
            fwd_bwd(lambda a, w: head(a, w, chunk_head(kernels, kept)), hidden, table),
            (3 if kept else 4) * head_flops,
        )
    )
    for other_kernels, other_kept in (("mlx", kept), (kernels, not kept)):
        if other_kernels == kernels and other_kept == kept:
            continue
        rows.append(
            (
                f"  (for comparison: {other_kernels}, {'logits kept' if other_kept else 'checkpointed'})",
                0,
                fwd_bwd(lambda a, w, k=other_kernels, o=other_kept: head(a, w, chunk_head(k, o)), hidden, table),
                (3 if other_kept else 4) * head_flops,
            )
        )
    return rows


def whole_step(
    model: nn.Module, tokens: mx.array, chunk: int, repeats: int
) -> tuple[tuple[float, float, float], tuple[float, float, float], float, float, dict[str, float]]:
    """Forward+backward, and the AdamW update, of the trainer's own code; their peaks; the state's bytes."""
    from varro.gspo.logprobs import token_logprobs

    def loss(m: nn.Module, toks: mx.array) -> mx.array:
        return token_logprobs(m, toks, chunk=chunk).mean()

    grad_fn = nn.value_and_grad(model, loss)
    mx.reset_peak_memory()
    grads: list[Any] = []

    def backward() -> Any:
        value, g = grad_fn(model, tokens)
        grads[:] = [g]
        return value, g

    grad_t = timed(backward, repeats)
    grad_peak = mx.get_peak_memory() / GB
    opt = FusedAdamW(learning_rate=1e-7, weight_decay=0.0)
    opt.init(model.trainable_parameters())

    def update() -> Any:
        opt.clip_and_update(model, grads[0], 1.0)
        return model.parameters(), opt.state

    mx.reset_peak_memory()
    update_t = timed(update, repeats)
    step_peak = mx.get_peak_memory() / GB
    nbytes = lambda tree: sum(a.nbytes for _, a in tree_flatten(tree)) / GB  # noqa: E731
    sizes = dict(parameters=nbytes(model.parameters()), gradients=nbytes(grads[0]), adamw_state=nbytes(opt.state))
    return grad_t, update_t, grad_peak, step_peak, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen3-0.6b", choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=48)
    parser.add_argument("--response", type=int, default=80)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from varro.blas import preload

    shape, length = MODELS[args.model], args.prompt + args.response
    print(
        f"BLAS {preload().library}; {args.model}, batch {args.batch} x {length} tokens; median of {args.repeats} "
        f"after a warm-up; load average {os.getloadavg()}",
        flush=True,
    )
    mx.random.seed(0)
    rows = components(shape, args.batch, length, args.chunk)
    total = 0.0
    print(f"{'component':60} {'runs':>5} {'s/run':>8} {'s/step':>8} {'GFLOP/s':>8}")
    for name, count, thunk, flops in rows:
        med, lo, hi = timed(thunk, args.repeats)
        total += count * med
        rate = f"{flops / med / 1e9:8.1f}" if flops else " " * 8
        print(f"{name:60} {count:5d} {med:8.4f} {count * med:8.3f} {rate}  ({lo:.4f}-{hi:.4f})", flush=True)
    del rows
    model = qwen3.Model(qwen3.ModelArgs(**COMMON, **shape))
    mx.eval(model.parameters())
    tokens = mx.array(np.random.default_rng(1).integers(0, shape["vocab_size"], (args.batch, length)))
    grad_t, update_t, grad_peak, step_peak, sizes = whole_step(model, tokens, args.chunk, args.repeats)
    print(f"{'sum of the components above (forward + backward)':60} {'':5} {'':8} {total:8.3f}")
    print(
        f"{'whole forward + backward (token_logprobs, value_and_grad)':60} {'':5} {'':8} {grad_t[0]:8.3f}  "
        f"({grad_t[1]:.3f}-{grad_t[2]:.3f})"
    )
    print(f"{'  not in any component':60} {'':5} {'':8} {grad_t[0] - total:8.3f}")
    print(
        f"{'AdamW update with clipping (FusedAdamW.clip_and_update)':60} {'':5} {'':8} {update_t[0]:8.3f}  "
        f"({update_t[1]:.3f}-{update_t[2]:.3f})"
    )
    print(
        "memory (GB): "
        + ", ".join(f"{k} {v:.2f}" for k, v in sizes.items())
        + f"; MLX peak over forward+backward {grad_peak:.2f}, over the update {step_peak:.2f}"
    )
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
