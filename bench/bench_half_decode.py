"""A bf16 checkpoint's roll-outs on the CPU: decoded in bf16, against decoded on a float32 copy (the default).

    .venv/bin/python -m bench.bench_half_decode [--headlines 2] [--tokens 16] [--repeats 3]

MLX's CPU backend has no fast half-precision matrix product, so under the NumPy
kernels `varro.generation.decode` runs a bf16/fp16 checkpoint on a float32 copy
of its weights. This times `sample_responses` (the decoding pass, no
teacher-forced pass) on a randomly initialised bf16 model of Qwen3-0.6B's
shape, `--headlines` x 8 rows for `--tokens` steps, both ways in one process,
alternated; first the raw matmul rate of each dtype at a decoding step's
MLP shape (rows x 1024 @ 1024 x 3072).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import varro  # noqa: F401  (preloads OpenBLAS before mlx)
import varro.generation.decode as decode
from bench.bench_generation import SAMPLE_DAY, prompts_for, random_qwen3, tiny_model
from events.schema import SamplerSpec


def matmul_rate(rows: int, dtype: object, seconds: float = 2.0) -> float:
    import mlx.core as mx

    a = mx.random.normal((rows, 1024)).astype(dtype)
    b = mx.random.normal((1024, 3072)).astype(dtype)
    mx.eval(a, b, a @ b)
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        mx.eval(a @ b)
        count += 1
    return 2 * rows * 1024 * 3072 * count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--headlines", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import mlx.core as mx

    rows = 8 * args.headlines
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for dtype in (mx.float32, mx.bfloat16):
        print(f"matmul {rows} x 1024 @ 1024 x 3072 in {dtype}: {matmul_rate(rows, dtype) / 1e9:.1f} GFLOP/s")
    big = random_qwen3(tiny_model().tokenizer, mx.bfloat16)
    prompts = prompts_for(big, args.headlines, day=SAMPLE_DAY)
    sampler = SamplerSpec(name="bench", max_tokens=args.tokens)
    seeds = {(h, i): 1000 * n + i for n, (h, _) in enumerate(prompts) for i in range(8)}
    on_copy = decode.float32_weights
    arms = {"float32 copy (default)": on_copy, "own bf16": contextlib.nullcontext}
    times: dict[str, list[float]] = {name: [] for name in arms}
    try:
        for repeat in range(args.repeats + 1):  # the first round warms up
            for name in arms if repeat % 2 == 0 else reversed(list(arms)):
                decode.float32_weights = arms[name]
                started = time.perf_counter()
                out = decode.sample_responses(
                    big, prompts, group_size=8, sampler=sampler, seeds=seeds, eos_token_ids=big.tokenizer.eos_token_ids
                )
                elapsed = time.perf_counter() - started
                tokens = sum(len(r.response_ids) for r in out)
                if repeat:
                    times[name].append(elapsed)
                print(f"  {name:22s} {elapsed:6.2f} s  {tokens / elapsed:6.1f} tok/s  load {os.getloadavg()[0]:.2f}")
    finally:
        decode.float32_weights = on_copy
    for name, values in times.items():
        print(f"{name:22s} median {statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})")
    speedup = [b / a for a, b in zip(times["float32 copy (default)"], times["own bf16"], strict=True)]
    print(f"float32 copy against own bf16: {statistics.median(speedup):.1f}x ({min(speedup):.1f}-{max(speedup):.1f}x)")


if __name__ == "__main__":
    main()
