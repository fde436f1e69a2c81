"""The local MLX judge: constrained letters, and batched + prefix-shared forwards that
compute exactly what one unpadded forward per prompt computes."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models import qwen3
from mlx_lm.tokenizer_utils import TokenizerWrapper
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from varro.judging import RoundRequest, rank_groups
from varro.judging.local import MlxJudge
from varro.judging.prompt import JudgePrompt
from varro.judging.selection import GroupToRank

CORPUS = [
    "Oil prices surge after OPEC agrees deeper output cuts.",
    "Market Impact: bullish for energy. Trade Recommendation: buy XLE. Timeframe: one week.",
    "Apple shares fall as iPhone sales disappoint; Risk Factors: demand, rates.",
    "Which prediction best anticipated the outcome? Answer with one letter.",
]
OUTCOMES = ("Oil prices surge after OPEC cuts output", "Apple shares fall on weak iPhone sales", "Gold steady")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer(chat: bool) -> TokenizerWrapper:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    if chat:
        hf.chat_template = CHAT_TEMPLATE
    return TokenizerWrapper(hf)


def make_model(vocab_size: int) -> qwen3.Model:
    mx.random.seed(0)
    model = qwen3.Model(
        qwen3.ModelArgs(
            model_type="qwen3",
            hidden_size=64,
            num_hidden_layers=2,
            intermediate_size=128,
            num_attention_heads=4,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            vocab_size=vocab_size,
            head_dim=16,
            tie_word_embeddings=True,
            max_position_embeddings=2048,
            rope_theta=10000.0,
        )
    )
    mx.eval(model.parameters())
    return model


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "chat"])
def judge(request):
    tokenizer = make_tokenizer(chat=request.param)
    return MlxJudge(make_model(len(tokenizer.vocab)), tokenizer, batch_size=5, prompt=JudgePrompt(candidate_chars=200))


def requests(n: int) -> list[RoundRequest]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        size = int(rng.integers(2, 9))
        out.append(
            RoundRequest(
                key=f"g{i}",
                headline=CORPUS[i % 4],
                outcomes=OUTCOMES,
                candidates=tuple(
                    " ".join(rng.choice(" ".join(CORPUS).split(), size=int(rng.integers(0, 25)))) for _ in range(size)
                ),
            )
        )
    return out


def full_prompt_logits(judge: MlxJudge, request: RoundRequest) -> np.ndarray:
    """Reference: one plain forward of the whole prompt, no cache, no padding."""
    head, tail = judge.prompt_ids(request)
    return np.array(judge.model(mx.array(head + tail)[None])[0, -1].astype(mx.float32))


def full_prompt_scores(judge: MlxJudge, request: RoundRequest) -> np.ndarray:
    logits = full_prompt_logits(judge, request)
    offered = logits[list(judge.template.letter_ids[: len(request.candidates)])].astype(np.float64)
    return offered - np.log(np.exp(offered - offered.max()).sum()) - offered.max()


def test_constrained_choice_is_always_a_remaining_letter_even_from_a_random_model(judge):
    batch = requests(24)
    answers = judge.pick(batch)
    for request, answer in zip(batch, answers, strict=True):
        assert 0 <= answer.choice < len(request.candidates)
        assert answer.raw == request.letters[answer.choice]
        assert len(answer.scores) == len(request.candidates)
        assert sum(np.exp(answer.scores)) == pytest.approx(1.0)
    free = [int(np.argmax(full_prompt_logits(judge, r))) for r in batch]
    valid = [set(judge.template.letter_ids[: len(r.candidates)]) for r in batch]
    assert (
        sum(f in v for f, v in zip(free, valid, strict=True)) < len(batch) // 2
    )  # unconstrained, it would mostly be invalid


def test_batched_padded_prefix_shared_forward_equals_one_plain_forward_per_prompt(judge):
    batch = requests(12)
    lengths = {len(judge.prompt_ids(r)[1]) for r in batch}
    assert len(lengths) > 3  # the batch really needs padding
    batched = judge.pick(batch)
    one_by_one = [judge.pick([r])[0] for r in batch]
    for request, a, b in zip(batch, batched, one_by_one, strict=True):
        reference = full_prompt_scores(judge, request)
        assert np.asarray(a.scores) == pytest.approx(reference, abs=2e-4)
        assert np.asarray(b.scores) == pytest.approx(reference, abs=2e-4)
        assert a.choice == b.choice == int(np.argmax(reference))


def test_a_day_of_groups_gets_strict_ranks_from_the_local_judge(judge):
    groups = [
        GroupToRank(
            headline_id=f"h{i}", headline=CORPUS[i % 4], texts=tuple(f"{CORPUS[(i + j) % 4]} {j}" for j in range(8))
        )
        for i in range(6)
    ]
    for ranked in rank_groups(groups, OUTCOMES, judge, None, seed=9):
        assert sorted(ranked.ranks) == list(range(1, 9))
        assert all(r is not None for r in ranked.raw_scores)
        assert ranked.judge == judge.name


def test_chat_prompt_keeps_the_round_after_the_shared_prefix():
    tokenizer = make_tokenizer(chat=True)
    chat_judge = MlxJudge(make_model(len(tokenizer.vocab)), tokenizer)
    head, tail = chat_judge.texts(requests(1)[0])
    assert head.startswith("<|im_start|>user\n") and OUTCOMES[0] in head
    assert tail.endswith("<|im_start|>assistant\n") and "A: " in tail
