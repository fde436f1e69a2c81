"""Groups ranked per second: the batched local judge against one judge call per round per group.

Both rank the same groups with the same random Qwen3 model, the same prompts
and the same letter constraint. The batched judge (varro.judging.local) runs
one forward per round over all groups and computes the shared prefix
(instruction + outcome headlines) once; the baseline, the original system's
way, runs a full forward of the whole prompt for every round of every group.

With --repeats N the paths are timed in turn N times in this one process
(the order rotating each repeat) and each repeat's ratio is reported, with
the median and range. --with-mlx-attention also times the batched judge on
mlx_lm's masked attention (attention="mlx", the path before NumPy's), and
--with-numpy-baseline also times the per-call baseline on varro.model.forward's
NumPy softmax/SwiGLU, so the gain from batching and prefix sharing can be told
from the gain from NumPy's `exp`.

    .venv/bin/python -m bench.bench_judge [--groups 32] [--group-size 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import varro  # noqa: F401  (first: preloads OpenBLAS before anything imports mlx)

# isort: split
import mlx.core as mx
import numpy as np
from mlx_lm.models import qwen3
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.tokenizer_utils import TokenizerWrapper
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from varro.judging.base import RoundAnswer, RoundRequest, best_position
from varro.judging.local import MlxJudge
from varro.judging.prompt import JudgePrompt
from varro.judging.selection import GroupToRank, rank_groups
from varro.model.forward import hidden_states, project

WORDS = [
    "oil",
    "prices",
    "surge",
    "opec",
    "output",
    "cuts",
    "brent",
    "crude",
    "energy",
    "stocks",
    "rally",
    "apple",
    "shares",
    "fall",
    "iphone",
    "sales",
    "fed",
    "rates",
    "steady",
    "dollar",
    "gold",
    "record",
    "bonds",
    "yields",
    "tech",
    "earnings",
    "beat",
    "miss",
    "guidance",
    "buy",
    "sell",
    "hold",
    "week",
    "month",
    "quarter",
    "risk",
    "demand",
    "supply",
    "inflation",
    "recession",
    "china",
    "tariffs",
    "bank",
    "loans",
]
SECTIONS = ("Market Impact", "Specific Assets", "Trade Recommendation", "Timeframe", "Risk Factors", "World View")


def tokenizer(texts: list[str]) -> TokenizerWrapper:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=512, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    return TokenizerWrapper(PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>"))


def model(vocab_size: int, hidden: int, layers: int) -> qwen3.Model:
    mx.random.seed(0)
    m = qwen3.Model(
        qwen3.ModelArgs(
            model_type="qwen3",
            hidden_size=hidden,
            num_hidden_layers=layers,
            intermediate_size=2 * hidden,
            num_attention_heads=4,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            vocab_size=vocab_size,
            head_dim=hidden // 4,
            tie_word_embeddings=True,
            max_position_embeddings=4096,
            rope_theta=10000.0,
        )
    )
    mx.eval(m.parameters())
    return m


def prediction(rng: np.random.Generator) -> str:
    return "\n".join(f"{s}: {' '.join(rng.choice(WORDS, size=int(rng.integers(3, 9))))}" for s in SECTIONS)


class PerCallJudge(MlxJudge):
    """The original way: one full-prompt forward per round per group, no batching, no shared prefix."""

    def logits(self, tokens: mx.array) -> mx.array:
        return self.model(tokens)

    def pick(self, rounds):
        answers = []
        for request in rounds:
            head, tail = self.prompt_ids(request)
            logits = np.array(self.logits(mx.array(head + tail)[None])[0, -1].astype(mx.float32))
            offered = logits[list(self.template.letter_ids[: len(request.candidates)])]
            choice = best_position(offered.tolist())
            answers.append(RoundAnswer(choice=choice, raw=request.letters[choice]))
        return answers


class PerCallNumpyJudge(PerCallJudge):
    """The same, its forward on varro.model.forward's NumPy softmax and SwiGLU (generation's kernels)."""

    def logits(self, tokens: mx.array) -> mx.array:
        return project(self.model, hidden_states(self.model, tokens, make_prompt_cache(self.model)))


def timed(judge, groups, outcomes) -> tuple[float, list]:
    start = time.perf_counter()
    ranked = rank_groups(groups, outcomes, judge, None, seed=1234)
    return time.perf_counter() - start, ranked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=32)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--outcomes", type=int, default=64, help="outcome headlines (64 = the default daily cap)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="time every path this many times, in turn")
    parser.add_argument("--with-mlx-attention", action="store_true", help="also the batched judge on MLX attention")
    parser.add_argument("--with-numpy-baseline", action="store_true", help="also the baseline on NumPy kernels")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    outcomes = [" ".join(rng.choice(WORDS, size=8)).capitalize() for _ in range(args.outcomes)]
    groups = [
        GroupToRank(
            headline_id=f"h{i:03d}",
            headline=" ".join(rng.choice(WORDS, size=10)),
            texts=tuple(prediction(rng) for _ in range(args.group_size)),
        )
        for i in range(args.groups)
    ]
    tok = tokenizer(outcomes + [t for g in groups for t in g.texts])
    net = model(len(tok.vocab), args.hidden, args.layers)
    prompt = JudgePrompt()
    paths: dict[str, MlxJudge] = {"batched": MlxJudge(net, tok, name="batched", batch_size=args.groups, prompt=prompt)}
    if args.with_mlx_attention:
        paths["batched, mlx attention"] = MlxJudge(
            net, tok, name="batched-mlx", batch_size=args.groups, prompt=prompt, attention="mlx"
        )
    paths["per-call"] = PerCallJudge(net, tok, name="per-call", prompt=prompt)
    if args.with_numpy_baseline:
        paths["per-call, numpy kernels"] = PerCallNumpyJudge(net, tok, name="per-call-numpy", prompt=prompt)

    sample = paths["batched"].prompt_ids(
        RoundRequest(key="h000", headline=groups[0].headline, outcomes=tuple(outcomes), candidates=groups[0].texts)
    )
    print(
        f"model: qwen3 hidden={args.hidden} layers={args.layers} vocab={len(tok.vocab)}; "
        f"{args.groups} groups x {args.group_size} roll-outs, {args.outcomes} outcome headlines; "
        f"round-1 prompt = {len(sample[0])} shared + {len(sample[1])} round tokens"
    )
    for judge in paths.values():
        timed(judge, groups[:2], outcomes)  # warm-up (MLX kernels, the shared prefix's first forward)
    names = list(paths)
    times: dict[str, list[float]] = {name: [] for name in names}
    rankings: dict[str, list] = {}
    for repeat in range(args.repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            seconds, rankings[name] = timed(paths[name], groups, outcomes)
            times[name].append(seconds)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{name} {times[name][-1]:.2f} s" for name in names))
    rounds = args.group_size - 1
    for name in names:
        median = statistics.median(times[name])
        batched = name.startswith("batched")
        forwards = f"1 forward per round, {rounds} rounds" if batched else f"{args.groups * rounds} forwards"
        print(
            f"{name:24s} ({forwards}): {median:8.2f} s  {args.groups / median:8.2f} groups/s  "
            f"(range {min(times[name]):.2f}-{max(times[name]):.2f} s)"
        )
    for slow in names:
        if slow.startswith("per-call"):
            for fast in names:
                if fast.startswith("batched"):
                    ratios = [a / b for a, b in zip(times[slow], times[fast], strict=True)]
                    same = sum(a.ranks == b.ranks for a, b in zip(rankings[fast], rankings[slow], strict=True))
                    print(
                        f"speed-up {fast} over {slow}: {statistics.median(ratios):.1f}x "
                        f"(range {min(ratios):.1f}-{max(ratios):.1f}x over {len(ratios)} repeats); "
                        f"identical rankings: {same}/{args.groups}"
                    )


if __name__ == "__main__":
    main()
