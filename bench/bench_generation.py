"""Roll-out throughput: Varro's batched path against one `mlx_lm.generate` call per roll-out.

The original system called `mlx_lm.generate` once per roll-out. Varro's path is
`generate_rollouts` with the default config: all roll-outs of a pass decode as
one batch with shared prompt prefill (the pass size is `generation.batch_size`,
"auto" by default), then the fp32 teacher-forced pass records the behaviour
log-probs. Both sides use the same model, sampler and token budget, on the
headlines of a bundled sample day; the baseline generates 8 roll-outs for each
of the first `--baseline-headlines` of them and the rates are compared per
roll-out. Each repeat times the baseline and the batched day back to back and
reports its own ratio, so load on a noisy machine hits both sides alike; the
summary is the median ratio.

    .venv/bin/python bench/bench_generation.py [--models tiny,qwen3-0.6b] [--repeats 3] [--batch auto]
    .venv/bin/python bench/bench_generation.py --models tiny --baseline batch_generate

"qwen3-0.6b" is a Qwen3-0.6B-shaped model with random weights (no download);
it never emits EOS, so every roll-out runs to max_tokens on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import varro  # noqa: F401  (first: preloads OpenBLAS before anything imports mlx)

# isort: split
import mlx.core as mx
from mlx_lm import generate as mlx_generate
from mlx_lm.generate import generate_step
from mlx_lm.sample_utils import make_sampler

from events.schema import CheckpointRef, Headline, SamplerSpec
from varro.config import VarroConfig
from varro.generation import batch_rows, behaviour_logprobs, generate_rollouts, sample_responses
from varro.model.cache import LoadedModel, ModelCache
from varro.model.shapes import QWEN3_0_6B
from varro.prompts import prompt_ids

HEADLINES = [
    "Oil falls as OPEC signals higher output",
    "Fed cuts rates by half a point",
    "Gold slides as the dollar firms",
    "Nvidia beats estimates on data center demand",
    "China factory activity contracts again",
    "Bitcoin jumps after ETF inflows",
    "UK inflation falls to a three-year low",
    "Tesla recalls vehicles over software fault",
]


def tiny_model() -> LoadedModel:
    cache = ModelCache(VarroConfig())
    return cache.load(cache.base_ref())


def random_qwen3(tokenizer, dtype) -> LoadedModel:
    from mlx_lm.models import qwen3

    mx.random.seed(0)
    model = qwen3.Model(qwen3.ModelArgs.from_dict(QWEN3_0_6B))
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        ref=CheckpointRef(sha256="random", base_model="qwen3-0.6b"),
        path=Path("."),
        manifest={},  # never read from disk: nothing to verify
    )


SAMPLE_DAY = Path(__file__).resolve().parent.parent / "varro" / "data" / "sample_headlines" / "2025-08-04.jsonl"


def prompts_for(loaded: LoadedModel, n: int, *, day: Path | None = None) -> list[tuple[str, list[int]]]:
    """Prompts for `n` headlines: the distinct headlines of a sample day, or the fixed short list above."""
    if day is not None:
        texts = list(dict.fromkeys(json.loads(line)["text"] for line in day.read_text().splitlines() if line.strip()))
        if len(texts) < n:
            raise SystemExit(f"{day} has {len(texts)} distinct headlines, fewer than {n}")
        date = day.stem
    else:
        texts, date = [HEADLINES[i % len(HEADLINES)] for i in range(n)], "2025-03-04"
    cfg = VarroConfig()
    return [
        (f"h{i}", prompt_ids(cfg, loaded.tokenizer, Headline(id=f"h{i}", text=texts[i], source="Reuters"), date))
        for i in range(n)
    ]


def baseline(
    loaded: LoadedModel, prompts, per_headline: int, sampler: SamplerSpec, decode: bool
) -> tuple[int, int, float]:
    """One mlx_lm call per roll-out, as the original system generated (text decoded where it can be)."""
    sample = make_sampler(sampler.temperature, sampler.top_p, top_k=sampler.top_k)
    eos = set(loaded.tokenizer.eos_token_ids)
    mx.random.seed(0)
    rollouts = tokens = 0
    started = time.perf_counter()
    for _, ids in prompts:
        for _ in range(per_headline):
            if decode:
                text = mlx_generate(loaded.model, loaded.tokenizer, ids, max_tokens=sampler.max_tokens, sampler=sample)
                tokens += len(loaded.tokenizer.encode(text, add_special_tokens=False)) + 1
            else:
                steps = generate_step(mx.array(ids), loaded.model, max_tokens=sampler.max_tokens, sampler=sample)
                for token, _ in steps:
                    tokens += 1
                    if token in eos:
                        break
            rollouts += 1
    return rollouts, tokens, time.perf_counter() - started


def stock_batch(loaded: LoadedModel, prompts, group: int, sampler: SamplerSpec, completion_batch: int) -> dict:
    """Stock `mlx_lm.batch_generate` on the same prompts (each repeated `group` times), the same sampler and budget.

    It returns no behaviour log-probs (Varro's path includes its teacher-forced
    pass), so this baseline does less work than the path it is compared with.
    """
    from mlx_lm.generate import batch_generate

    sample = make_sampler(sampler.temperature, sampler.top_p, top_k=sampler.top_k)
    rows = [ids for _, ids in prompts for _ in range(group)]
    mx.random.seed(0)
    started = time.perf_counter()
    out = batch_generate(
        loaded.model,
        loaded.tokenizer,
        rows,
        max_tokens=sampler.max_tokens,
        sampler=sample,
        return_token_ids=True,
        completion_batch_size=completion_batch,
        # stock's default prefill batch (8) at its default width; Varro's width prefills as one batch
        prefill_batch_size=8 if completion_batch == 32 else completion_batch,
    )
    tokens = sum(len(ids) for ids in out.token_ids)
    return dict(n=len(rows), tokens=tokens, s=time.perf_counter() - started)


def compare_stock(loaded: LoadedModel, prompts, sampler: SamplerSpec, batch: int, repeats: int) -> None:
    """Varro's batched day against stock `batch_generate` (its defaults, and one batch as wide as Varro's)."""
    print(f"\n== against stock mlx_lm.batch_generate, {len(prompts)} headlines x 8 = {8 * len(prompts)} prompts")
    widths = (32, batch)  # batch_generate's default completion batch, and Varro's pass width
    stock_batch(loaded, prompts[:1], 2, sampler, 2)  # warm-up, untimed
    ratios: dict[int, list[float]] = {w: [] for w in widths}
    for k in range(repeats):
        for width in widths:  # alternate: stock, Varro, stock, Varro, ...
            stock = stock_batch(loaded, prompts, 8, sampler, width)
            fast = batched(loaded, prompts, 8, sampler, batch)
            ratio = (fast["n"] / fast["s"]) / (stock["n"] / stock["s"])
            ratios[width].append(ratio)
            print(
                f"repeat {k + 1}, stock completion batch {width:3d}: stock {stock['s']:6.2f} s "
                f"({stock['tokens']} tokens) | Varro {fast['s']:6.2f} s ({fast['tokens']} tokens, teacher pass "
                f"included) | {ratio:.2f}x roll-outs/s, load {os.getloadavg()[0]:.2f}"
            )
    for width, values in ratios.items():
        print(
            f"stock completion batch {width}: median {statistics.median(values):.2f}x "
            f"(range {min(values):.2f}-{max(values):.2f}x over {len(values)} repeats)"
        )


def warm_up(loaded: LoadedModel, prompts, sampler: SamplerSpec) -> None:
    """One short untimed run of each path, so neither timing carries first-call costs."""
    short = SamplerSpec(
        name="warm-up", temperature=sampler.temperature, top_p=sampler.top_p, top_k=sampler.top_k, max_tokens=8
    )
    generate_rollouts(
        loaded,
        prompts[:1],
        group_size=2,
        sampler=short,
        seeds={(prompts[0][0], i): i for i in range(2)},
        batch_size=2,
        eos_token_ids=loaded.tokenizer.eos_token_ids,
    )
    baseline(loaded, prompts[:1], 1, short, decode=True)


def batched(loaded: LoadedModel, prompts, group: int, sampler: SamplerSpec, batch_size: int) -> dict:
    """Varro's path, `generate_rollouts`: sampling plus the teacher-forced fp32 pass."""
    seeds = {(hid, i): 1000 * n + i for n, (hid, _) in enumerate(prompts) for i in range(group)}
    started = time.perf_counter()
    records = generate_rollouts(
        loaded,
        prompts,
        group_size=group,
        sampler=sampler,
        seeds=seeds,
        batch_size=batch_size,
        eos_token_ids=loaded.tokenizer.eos_token_ids,
    )
    return dict(n=len(records), tokens=sum(len(r.response_ids) for r in records), s=time.perf_counter() - started)


def parts(loaded: LoadedModel, prompts, group: int, sampler: SamplerSpec, batch_size: int) -> dict:
    """The two halves of the full path timed alone: sampling (one pass per batch) and the teacher-forced pass."""
    seeds = {(hid, i): 1000 * n + i for n, (hid, _) in enumerate(prompts) for i in range(group)}
    per_pass = max(1, batch_size // group)
    started = time.perf_counter()
    sampled = []
    for at in range(0, len(prompts), per_pass):
        sampled += sample_responses(
            loaded,
            prompts[at : at + per_pass],
            group_size=group,
            sampler=sampler,
            seeds=seeds,
            eos_token_ids=loaded.tokenizer.eos_token_ids,
        )
    sample_s = time.perf_counter() - started
    prompt_of = dict(prompts)
    started = time.perf_counter()
    behaviour_logprobs(
        loaded.model,
        [prompt_of[s.headline_id] for s in sampled],
        [s.response_ids for s in sampled],
        temperature=sampler.temperature or 1.0,
    )
    return dict(sample_s=sample_s, teacher_s=time.perf_counter() - started)


def compare(
    name: str,
    loaded: LoadedModel,
    prompts,
    base_prompts,
    sampler: SamplerSpec,
    batch: int,
    repeats: int,
    decode: bool,
    base_per_headline: int = 8,
) -> None:
    """`repeats` back-to-back pairs of (baseline, batched day), then the halves of the batched path once."""
    warm_up(loaded, prompts, sampler)
    print(f"\n== {name}")
    print(
        f"{'repeat':>6s} {'baseline roll-outs':>18s} {'tokens':>7s} {'s':>6s} {'r/s':>6s} | "
        f"{'batched roll-outs':>17s} {'tokens':>7s} {'s':>6s} {'r/s':>6s} {'tok/s':>7s} | {'speed-up':>8s}"
    )
    ratios, token_ratios = [], []
    for k in range(repeats):
        b_n, b_tok, b_s = baseline(loaded, base_prompts, base_per_headline, sampler, decode)
        fast = batched(loaded, prompts, 8, sampler, batch)
        ratio = (fast["n"] / fast["s"]) / (b_n / b_s)
        ratios.append(ratio)
        token_ratios.append((fast["tokens"] / fast["s"]) / (b_tok / b_s))
        print(
            f"{k + 1:6d} {b_n:18d} {b_tok:7d} {b_s:6.2f} {b_n / b_s:6.2f} | {fast['n']:17d} {fast['tokens']:7d} "
            f"{fast['s']:6.2f} {fast['n'] / fast['s']:6.2f} {fast['tokens'] / fast['s']:7.1f} | {ratio:7.1f}x"
        )
    halves = parts(loaded, prompts, 8, sampler, batch)
    print(
        f"median speed-up: {statistics.median(ratios):.1f}x in roll-outs/s, "
        f"{statistics.median(token_ratios):.1f}x in tokens/s (min {min(ratios):.1f}x, max {max(ratios):.1f}x); "
        f"batched path alone: sampling {halves['sample_s']:.2f} s + teacher-forced pass {halves['teacher_s']:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,qwen3-0.6b")
    parser.add_argument("--headlines", type=int, default=32, help="tiny model: headlines of the sample day, batched")
    parser.add_argument("--baseline-headlines", type=int, default=2, help="tiny model: headlines for the baseline")
    parser.add_argument("--batch", default="auto", help='rows per pass: a number, or "auto" (the default config)')
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-tokens", type=int, default=32, help="qwen3-0.6b: max tokens per roll-out")
    parser.add_argument("--big-headlines", type=int, default=8, help="qwen3-0.6b: headlines in the batched path")
    parser.add_argument("--big-dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--baseline",
        default="generate",
        choices=["generate", "batch_generate"],
        help="tiny model: one mlx_lm.generate per roll-out (the original system), or stock mlx_lm.batch_generate",
    )
    args = parser.parse_args()
    batch_setting = args.batch if args.batch == "auto" else int(args.batch)
    gen = VarroConfig().generation
    tiny = tiny_model()
    if "tiny" in args.models:
        sampler = VarroConfig().sampler()
        prompts = prompts_for(tiny, args.headlines, day=SAMPLE_DAY)
        rows = batch_rows(
            batch_setting, tiny.model, group_size=8, max_tokens=sampler.max_tokens, kv_cache_mb=gen.kv_cache_mb
        )
        if args.baseline == "batch_generate":
            warm_up(tiny, prompts, sampler)
            compare_stock(tiny, prompts, sampler, rows, args.repeats)
            return
        compare(
            f"varro-tiny, {len(prompts)} headlines of {SAMPLE_DAY.stem} x 8 roll-outs, sampler {sampler.name} "
            f"(T={sampler.temperature}, top_p={sampler.top_p}, top_k={sampler.top_k}, "
            f"max_tokens={sampler.max_tokens}), batch {args.batch} = {rows} rows",
            tiny,
            prompts,
            prompts[: args.baseline_headlines],
            sampler,
            rows,
            args.repeats,
            decode=True,
        )
    if "qwen3-0.6b" in args.models:
        big = random_qwen3(tiny.tokenizer, getattr(mx, args.big_dtype))
        sampler = SamplerSpec(name="bench", max_tokens=args.big_tokens)
        prompts = prompts_for(big, args.big_headlines, day=SAMPLE_DAY)
        rows = batch_rows(
            batch_setting, big.model, group_size=8, max_tokens=sampler.max_tokens, kv_cache_mb=gen.kv_cache_mb
        )
        compare(
            f"Qwen3-0.6B shape, random weights, {args.big_dtype}, {len(prompts)} headlines x 8 roll-outs, "
            f"max_tokens={args.big_tokens}, batch {args.batch} = {rows} rows",
            big,
            prompts,
            prompts[:1],
            sampler,
            rows,
            args.repeats,
            decode=False,
            base_per_headline=2,
        )


if __name__ == "__main__":
    main()
