"""The decoding pass on prompts shared per headline (the CPU default) against one prompt copy per row.

    .venv/bin/python -m bench.bench_shared_decode [--model tiny|qwen3-0.6b] [--headlines 32] [--repeats 5]

`sample_responses` (the decoding pass, no teacher-forced pass) under the NumPy
kernels, on the first `--headlines` of the sample day 2025-08-04 x 8 rows with
the default sampler, both ways in one process, alternated after a warm-up of
each: the default `varro.model.shared_prompt` cache, and mlx_lm's
`BatchKVCache` with one copy of each prompt per row (the decoding path before
2026-12-01, which MLX's kernels still take). Reports each arm's median and
range, the median of the per-repeat ratios, and how many roll-outs drew the
same tokens both ways (the two are different float32 programs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import varro  # noqa: F401  (preloads OpenBLAS before mlx)
import varro.generation.decode as decode
from bench.bench_generation import SAMPLE_DAY, prompts_for, random_qwen3, tiny_model
from events.schema import SamplerSpec

# isort: split
import mlx.nn as nn

from varro.model.forward import Forward


def per_row_cache(
    forward: Forward, model: nn.Module, prompts: Sequence[list[int]], groups: Sequence[int], capacity: int
) -> list[Any]:
    """The arm without sharing: mlx_lm's batch cache, each row its own copy of its prompt (`capacity` unused)."""
    return decode.merged_cache(forward, model, prompts, len(groups) // len(prompts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "qwen3-0.6b"], default="tiny")
    parser.add_argument("--headlines", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=160, help="max_tokens (the default sampler's: 160)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import mlx.core as mx

    print(f"load average before: {os.getloadavg()[0]:.2f}")
    tiny = tiny_model()
    loaded = tiny if args.model == "tiny" else random_qwen3(tiny.tokenizer, mx.float32)
    prompts = prompts_for(loaded, args.headlines, day=SAMPLE_DAY)
    sampler = SamplerSpec(name="bench", temperature=0.8, top_p=0.95, top_k=50, max_tokens=args.tokens)
    seeds = {(h, i): 1000 * n + i for n, (h, _) in enumerate(prompts) for i in range(8)}
    shared = decode.shared_prompt_cache
    arms = {"shared prompts (default)": shared, "one prompt copy per row": per_row_cache}

    def run(name: str) -> tuple[float, list[list[int]]]:
        decode.shared_prompt_cache = arms[name]  # the bench's switch between the two caches
        try:
            started = time.perf_counter()
            out = decode.sample_responses(
                loaded,
                prompts,
                group_size=8,
                sampler=sampler,
                seeds=seeds,
                eos_token_ids=loaded.tokenizer.eos_token_ids,
                kernels="numpy",
            )
            return time.perf_counter() - started, [r.response_ids for r in out]
        finally:
            decode.shared_prompt_cache = shared

    tokens = {name: run(name)[1] for name in arms}  # warm-up, untimed
    times: dict[str, list[float]] = {name: [] for name in arms}
    for repeat in range(args.repeats):
        for name in arms if repeat % 2 == 0 else reversed(list(arms)):
            seconds, _ = run(name)
            times[name].append(seconds)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)
    rows = len(prompts) * 8
    for name, t in times.items():
        print(f"{name}: median {statistics.median(t):.2f} s (range {min(t):.2f}-{max(t):.2f}), {rows} rows")
    ratios = [b / a for a, b in zip(*times.values(), strict=True)]
    print(f"speed-up: median {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}x)")
    same = sum(a == b for a, b in zip(*tokens.values(), strict=True))
    print(f"roll-outs with the same tokens both ways: {same} of {rows}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
