"""The local MLX judge: constrained letters, and batched + prefix-shared forwards that
compute exactly what one unpadded forward per prompt computes, on both attention paths."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models import qwen3
from mlx_lm.tokenizer_utils import TokenizerWrapper
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from varro.judging import RoundRequest, rank_groups, shared_prefix
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


def dense_reference(queries, prefix_keys, prefix_values, suffix_keys, suffix_values, pads, scale):
    """float64, one row at a time, no padding at all: row i's prompt is prefix + suffix[pads[i]:]."""
    heads, n = queries.shape[1:3]
    kv_heads, prefix_len = prefix_keys.shape[:2]
    columns = suffix_keys.shape[2]
    out = np.zeros(queries.shape)
    for i, pad in enumerate(pads):
        keys = np.concatenate([prefix_keys, suffix_keys[i, :, pad:]], axis=1).astype(np.float64)
        values = np.concatenate([prefix_values, suffix_values[i, :, pad:]], axis=1).astype(np.float64)
        for h in range(heads):
            g = h // (heads // kv_heads)
            for j in range(n):
                column = columns - n + j
                if column < pad:
                    continue  # a pad query: nothing to compute
                seen = prefix_len + column - pad + 1
                scores = keys[g, :seen] @ queries[i, h, j].astype(np.float64) * scale
                weights = np.exp(scores - scores.max())
                out[i, h, j] = weights @ values[g, :seen] / weights.sum()
    return out


@pytest.mark.parametrize("block", [1, 3, 64])
@pytest.mark.parametrize("n", [1, 4, 9], ids=["last-column", "part", "all-columns"])
def test_blocked_numpy_attention_is_each_rows_own_unpadded_causal_attention(block, n):
    rng = np.random.default_rng(7)
    rows, heads, kv_heads, dim, prefix_len, columns = 5, 4, 2, 8, 6, 9
    pads = [0, 2, 5, 8, 3]  # 8: in a 4-column call this row has no real query at all
    queries = rng.standard_normal((rows, heads, n, dim)).astype(np.float32)
    prefix_k, prefix_v = (rng.standard_normal((kv_heads, prefix_len, dim)).astype(np.float32) for _ in range(2))
    suffix_k, suffix_v = (rng.standard_normal((rows, kv_heads, columns, dim)).astype(np.float32) for _ in range(2))
    for i, pad in enumerate(pads):  # garbage in the pad columns must not leak into any real query
        suffix_k[i, :, :pad], suffix_v[i, :, :pad] = 1e3, -1e3
    got = shared_prefix.attention(queries, prefix_k, prefix_v, suffix_k, suffix_v, pads, scale=0.3, block=block)
    want = dense_reference(queries, prefix_k, prefix_v, suffix_k, suffix_v, pads, 0.3)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["numpy", "mlx"])
def test_both_attention_paths_give_every_row_the_logits_of_its_own_unpadded_forward(attention, monkeypatch):
    monkeypatch.setattr(shared_prefix, "QUERY_BLOCK", 4)  # several blocks per row, the last one partial
    tokenizer = make_tokenizer(chat=False)
    judge = MlxJudge(make_model(len(tokenizer.vocab)), tokenizer, attention=attention)
    assert judge.numpy_attention == (attention == "numpy")
    batch = requests(6)
    head, _ = judge.prompt_ids(batch[0])
    tails = [judge.prompt_ids(r)[1] for r in batch]
    tails[1] = tails[1][-1:]  # one token: no query of its own in the first call
    tails[2] = tails[2][-6:]
    assert len({len(t) for t in tails}) == len(tails)  # every row a different pad length
    calls = []
    attend = shared_prefix.SharedPrefixCache.attend
    monkeypatch.setattr(
        shared_prefix.SharedPrefixCache, "attend", lambda self, *a: calls.append(self) or attend(self, *a)
    )
    logits = judge._next_token_logits(judge._prefix(tuple(head)), tails)
    layers = len(judge.model.layers)
    assert len(calls) == (2 * layers - 1 if attention == "numpy" else 0)  # the last layer's first call: unread
    for row, tail in zip(logits, tails, strict=True):
        reference = np.array(judge.model(mx.array(head + tail)[None])[0, -1].astype(mx.float32))
        np.testing.assert_allclose(row, reference, atol=1e-4, rtol=1e-4)


def test_routing_leaves_every_other_attention_call_bit_identical():
    tokenizer = make_tokenizer(chat=False)
    model = make_model(len(tokenizer.vocab))
    MlxJudge(model, tokenizer)  # routes qwen3's attention (on the CPU)
    routed = qwen3.scaled_dot_product_attention
    assert routed is not routed.__wrapped__
    rng = np.random.default_rng(3)
    q, k, v = (mx.array(rng.standard_normal((2, 4, 7, 16)).astype(np.float32)) for _ in range(3))
    for mask in (None, "causal"):
        args = dict(cache=None, scale=0.25, mask=mask)
        assert np.array_equal(np.array(routed(q, k, v, **args)), np.array(routed.__wrapped__(q, k, v, **args)))


def test_an_unknown_attention_path_is_refused():
    tokenizer = make_tokenizer(chat=False)
    with pytest.raises(ValueError, match="attention must be"):
        MlxJudge(make_model(len(tokenizer.vocab)), tokenizer, attention="fast")


def test_a_model_whose_attention_cannot_be_routed_stays_on_the_mlx_path_or_is_refused_for_numpy():
    from types import SimpleNamespace

    from varro.judging.base import JudgeError

    tokenizer = make_tokenizer(chat=False)
    opaque = SimpleNamespace(layers=[SimpleNamespace(mlp=None)])  # no self_attn to route
    assert not shared_prefix.route(opaque)
    assert not MlxJudge(opaque, tokenizer).numpy_attention
    with pytest.raises(JudgeError, match="attention = 'numpy' needs"):
        MlxJudge(opaque, tokenizer, attention="numpy")
