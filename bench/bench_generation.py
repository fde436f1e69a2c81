"""Roll-out throughput: Varro's batched path against one `mlx_lm.generate` call per roll-out.

The original system called `mlx_lm.generate` once per roll-out. Varro's path is
`generate_rollouts`: all roll-outs of many headlines decode as one batch with
shared prompt prefill, and each token's fp32 behaviour log-prob is recorded (from
the decoding pass for an fp32 checkpoint; a checkpoint stored in lower precision
adds the teacher-forced fp32 pass, timed on its own line). Both sides use the same
model, prompts, sampler and token budget in one run.

    .venv/bin/python bench/bench_generation.py [--models tiny,qwen3-0.6b]

"qwen3-0.6b" is a Qwen3-0.6B-shaped model with random weights (no download);
it never emits EOS, so every roll-out runs to max_tokens on both sides.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import varro  # noqa: E402,F401  (preloads the BLAS before mlx)

import mlx.core as mx  # noqa: E402
from mlx_lm import generate as mlx_generate  # noqa: E402
from mlx_lm.generate import generate_step  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402

from events.schema import CheckpointRef, Headline, SamplerSpec  # noqa: E402
from varro.config import VarroConfig  # noqa: E402
from varro.generation import generate_rollouts, sample_responses, sequence_logprobs  # noqa: E402
from varro.model.cache import LoadedModel, ModelCache  # noqa: E402
from varro.prompts import prompt_ids  # noqa: E402

HEADLINES = [
    "Oil falls as OPEC signals higher output", "Fed cuts rates by half a point",
    "Gold slides as the dollar firms", "Nvidia beats estimates on data center demand",
    "China factory activity contracts again", "Bitcoin jumps after ETF inflows",
    "UK inflation falls to a three-year low", "Tesla recalls vehicles over software fault",
]
QWEN3_06B = dict(model_type="qwen3", hidden_size=1024, num_hidden_layers=28, intermediate_size=3072,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                 rms_norm_eps=1e-6, max_position_embeddings=40960, rope_theta=1e6, tie_word_embeddings=True)


def tiny_model() -> LoadedModel:
    cache = ModelCache(VarroConfig())
    return cache.load(cache.base_ref())


def random_qwen3(tokenizer, dtype) -> LoadedModel:
    from mlx_lm.models import qwen3

    mx.random.seed(0)
    model = qwen3.Model(qwen3.ModelArgs.from_dict(QWEN3_06B))
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    return LoadedModel(model=model, tokenizer=tokenizer, ref=CheckpointRef(sha256="random", base_model="qwen3-0.6b"),
                       path=Path("."))


def prompts_for(loaded: LoadedModel, n: int) -> list[tuple[str, list[int]]]:
    cfg = VarroConfig()
    return [(f"h{i}", prompt_ids(cfg, loaded.tokenizer, Headline(id=f"h{i}", text=HEADLINES[i % len(HEADLINES)],
                                                                  source="Reuters"), "2025-03-04"))
            for i in range(n)]


def baseline(loaded: LoadedModel, prompts, per_headline: int, sampler: SamplerSpec, decode: bool) -> tuple[int, int, float]:
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
                for n, (token, _) in enumerate(generate_step(mx.array(ids), loaded.model, max_tokens=sampler.max_tokens,
                                                             sampler=sample), start=1):
                    if token in eos:
                        break
                tokens += n
            rollouts += 1
    return rollouts, tokens, time.perf_counter() - started


def batched(loaded: LoadedModel, prompts, group: int, sampler: SamplerSpec, batch_size: int) -> dict:
    """Varro's path, `generate_rollouts`, then its sampling alone and the teacher-forced fp32 pass alone."""
    seeds = {(hid, i): 1000 * n + i for n, (hid, _) in enumerate(prompts) for i in range(group)}
    eos = loaded.tokenizer.eos_token_ids
    started = time.perf_counter()
    records = generate_rollouts(loaded, prompts, group_size=group, sampler=sampler, seeds=seeds,
                                batch_size=batch_size, eos_token_ids=eos)
    full_s = time.perf_counter() - started
    started = time.perf_counter()
    sampled = sample_responses(loaded, prompts, group_size=group, sampler=sampler, seeds=seeds, eos_token_ids=eos)
    sample_s = time.perf_counter() - started
    prompt_of = dict(prompts)
    started = time.perf_counter()
    sequence_logprobs(loaded.model, [prompt_of[s.headline_id] for s in sampled], [s.response_ids for s in sampled],
                      temperature=sampler.temperature or 1.0)
    teacher_s = time.perf_counter() - started
    return dict(n=len(records), tokens=sum(len(r.response_ids) for r in records), full_s=full_s,
                sample_s=sample_s, teacher_s=teacher_s)


def report(name: str, base, fast: dict) -> None:
    b_n, b_tok, b_s = base
    n, tok = fast["n"], fast["tokens"]
    rows = [
        ("one mlx_lm.generate per roll-out", b_n, b_tok, b_s),
        ("generate_rollouts (full path)", n, tok, fast["full_s"]),
        ("batched sampling alone", n, tok, fast["sample_s"]),
        ("sampling + teacher-forced fp32 pass", n, tok, fast["sample_s"] + fast["teacher_s"]),
    ]
    print(f"\n== {name}")
    print(f"{'path':40s} {'roll-outs':>9s} {'tokens':>7s} {'seconds':>8s} {'roll-outs/s':>11s} {'tokens/s':>9s}")
    for label, count, tokens, sec in rows:
        print(f"{label:40s} {count:9d} {tokens:7d} {sec:8.2f} {count / sec:11.2f} {tokens / sec:9.1f}")
    base_rate = b_n / b_s
    print(f"speed-up in roll-outs/s: full path {n / fast['full_s'] / base_rate:.1f}x, "
          f"sampling alone {n / fast['sample_s'] / base_rate:.1f}x, "
          f"sampling + teacher-forced pass {n / (fast['sample_s'] + fast['teacher_s']) / base_rate:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,qwen3-0.6b")
    parser.add_argument("--headlines", type=int, default=8, help="tiny model: headlines in the batched path")
    parser.add_argument("--baseline-headlines", type=int, default=2, help="tiny model: headlines for the baseline")
    parser.add_argument("--big-tokens", type=int, default=32, help="qwen3-0.6b: max tokens per roll-out")
    parser.add_argument("--big-dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    tiny = tiny_model()
    if "tiny" in args.models:
        sampler = VarroConfig().sampler()
        prompts = prompts_for(tiny, args.headlines)
        fast = batched(tiny, prompts, 8, sampler, 64)
        base = baseline(tiny, prompts[: args.baseline_headlines], 8, sampler, decode=True)
        report(f"varro-tiny, sampler {sampler.name} (T={sampler.temperature}, top_p={sampler.top_p}, "
               f"top_k={sampler.top_k}, max_tokens={sampler.max_tokens}), batch 64", base, fast)
    if "qwen3-0.6b" in args.models:
        big = random_qwen3(tiny.tokenizer, getattr(mx, args.big_dtype))
        sampler = SamplerSpec(name="bench", max_tokens=args.big_tokens)
        prompts = prompts_for(big, 2)
        fast = batched(big, prompts, 8, sampler, 16)
        base = baseline(big, prompts[:1], 2, sampler, decode=False)
        report(f"Qwen3-0.6B shape, random weights, {args.big_dtype}, max_tokens={args.big_tokens}, batch 16", base, fast)


if __name__ == "__main__":
    main()
