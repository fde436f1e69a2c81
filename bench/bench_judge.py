"""Groups ranked per second: the batched local judge against one judge call per round per group.

Both rank the same groups with the same random Qwen3 model, the same prompts
and the same letter constraint. The batched judge (varro.judging.local) runs
one forward per round over all groups and computes the shared prefix
(instruction + outcome headlines) once; the baseline, the original system's
way, runs a full forward of the whole prompt for every round of every group.

    .venv/bin/python -m bench.bench_judge [--groups 32] [--group-size 8]
"""

from __future__ import annotations

import argparse
import time

import varro  # noqa: F401  (first: preloads OpenBLAS before anything imports mlx)

# isort: split
import mlx.core as mx
import numpy as np
from mlx_lm.models import qwen3
from mlx_lm.tokenizer_utils import TokenizerWrapper
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from varro.judging.base import RoundAnswer, RoundRequest, best_position
from varro.judging.local import MlxJudge
from varro.judging.prompt import JudgePrompt
from varro.judging.selection import GroupToRank, rank_groups

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

    def pick(self, rounds):
        answers = []
        for request in rounds:
            head, tail = self.prompt_ids(request)
            logits = np.array(self.model(mx.array(head + tail)[None])[0, -1].astype(mx.float32))
            offered = logits[list(self.template.letter_ids[: len(request.candidates)])]
            choice = best_position(offered.tolist())
            answers.append(RoundAnswer(choice=choice, raw=request.letters[choice]))
        return answers


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
    batched = MlxJudge(net, tok, name="batched", batch_size=args.groups, prompt=prompt)
    per_call = PerCallJudge(net, tok, name="per-call", prompt=prompt)

    sample = batched.prompt_ids(
        RoundRequest(key="h000", headline=groups[0].headline, outcomes=tuple(outcomes), candidates=groups[0].texts)
    )
    print(
        f"model: qwen3 hidden={args.hidden} layers={args.layers} vocab={len(tok.vocab)}; "
        f"{args.groups} groups x {args.group_size} roll-outs, {args.outcomes} outcome headlines; "
        f"round-1 prompt = {len(sample[0])} shared + {len(sample[1])} round tokens"
    )
    timed(batched, groups[:2], outcomes)  # warm-up (MLX kernels)
    t_batched, r_batched = timed(batched, groups, outcomes)
    t_per_call, r_per_call = timed(per_call, groups, outcomes)
    same = sum(a.ranks == b.ranks for a, b in zip(r_batched, r_per_call, strict=True))
    rounds = args.group_size - 1
    print(
        f"batched  (1 forward per round, {rounds} rounds): {t_batched:8.2f} s  {args.groups / t_batched:8.2f} groups/s"
    )
    print(
        f"per-call ({args.groups * rounds} forwards):          {t_per_call:8.2f} s  "
        f"{args.groups / t_per_call:8.2f} groups/s"
    )
    print(f"speed-up: {t_per_call / t_batched:.1f}x; identical rankings: {same}/{args.groups}")


if __name__ == "__main__":
    main()
