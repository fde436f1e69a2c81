"""The trainer's GSPO step with NumPy's and with MLX's output head, alternated in one process.

    .venv/bin/python -m bench.bench_head [--model qwen3-0.6b] [--steps 5]

Under the CPU default (`model.kernels` auto → NumPy), `varro.gspo.logprobs`
takes the vocabulary log-softmax in NumPy; this runs `bench_train`'s step (one
minibatch of 4 × (48 + 80) tokens: forward, log-probs, GSPO loss, backward,
clipping, the fused AdamW) alternately with that head and with MLX's
(`chunk_head("mlx", …)` in its place, everything else the same), on one model
in one process, so the two arms share the machine's state through the run.
The arms swap order every step; the first step of each is a warm-up (the
optimizer's moments are allocated in it). Prints each step, then each arm's
median and range, and the MLX allocator's peak in the backward and the update.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import varro  # noqa: F401  (preloads OpenBLAS before mlx)
import varro.gspo.logprobs as logprobs
from bench.bench_train import LR, MODELS, mlx_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen3-0.6b", choices=sorted(MODELS))
    parser.add_argument("--steps", type=int, default=5, help="steps per arm, the first a warm-up")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=48)
    parser.add_argument("--response", type=int, default=80)
    parser.add_argument("--chunk", type=int, default=256)
    args = parser.parse_args()

    import mlx.core as mx

    from varro.gspo.optimizer import FusedAdamW
    from varro.gspo.trainer import minibatch_gradient

    model, cfg, data, loss_and_grad = mlx_step(args, MODELS[args.model])
    opt = FusedAdamW(learning_rate=LR, weight_decay=0.0)

    as_configured = logprobs.chunk_head
    arms = {
        "numpy head (default)": as_configured,
        "mlx head": lambda kernels, kept: as_configured("mlx", kept),
    }
    names = list(arms)
    results: dict[str, list[tuple[float, float, float, float, float]]] = {name: [] for name in names}
    print(f"{args.model}: batch {args.batch} x ({args.prompt} + {args.response}) tokens, {args.steps} steps per arm")
    try:
        for step in range(args.steps):
            for name in names if step % 2 == 0 else names[::-1]:
                logprobs.chunk_head = arms[name]
                mx.reset_peak_memory()
                started = time.perf_counter()
                loss, grads, _ = minibatch_gradient(loss_and_grad, data, np.arange(args.batch), cfg)
                backward_done = time.perf_counter()
                backward_peak = mx.get_peak_memory() / 2**20
                mx.reset_peak_memory()
                opt.clip_and_update(model, grads, 1.0)
                mx.eval(model.parameters(), opt.state)
                del grads
                done = time.perf_counter()
                row = (done - started, backward_done - started, done - backward_done, backward_peak)
                results[name].append((*row, mx.get_peak_memory() / 2**20))
                print(
                    f"step {step} {name:21s} {row[0]:6.2f} s  forward+backward {row[1]:6.2f} s  "
                    f"update {row[2]:5.2f} s  peak backward {backward_peak:7.0f} MB, "
                    f"update {results[name][-1][4]:7.0f} MB  loss {float(loss):+.7f}  load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    finally:
        logprobs.chunk_head = as_configured
    for name in names:
        timed = results[name][1:]
        for label, column in (("step", 0), ("forward+backward", 1), ("update", 2)):
            values = [r[column] for r in timed]
            print(
                f"{name:21s} {label:17s} median {statistics.median(values):6.2f} s "
                f"({min(values):.2f}-{max(values):.2f}) over {len(values)} steps"
            )
        backward, update = max(r[3] for r in timed), max(r[4] for r in timed)
        print(f"{name:21s} peak              {backward:.0f} MB backward, {update:.0f} MB update")


if __name__ == "__main__":
    main()
