"""Batched roll-outs: EOS kept, exact behaviour log-probs, per-roll-out reproducibility."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from events.schema import Headline, SamplerSpec
from varro.config import VarroConfig
from varro.generation import (
    GenerationError,
    behaviour_logprobs,
    generate_rollouts,
    sample_responses,
    sample_tokens,
)
from varro.model.cache import ModelCache
from varro.prompts import prompt_ids

HEADLINES = [
    Headline(id="h-oil", text="Oil falls as OPEC signals higher output", source="Reuters"),
    Headline(id="h-fed", text="Fed cuts rates by half a point", source="CNBC"),
    Headline(id="h-gold", text="Gold slides as the dollar firms", source="Bloomberg"),
]
SAMPLER = SamplerSpec(name="test", temperature=0.8, top_p=0.95, top_k=50, max_tokens=160)
G = 4


@pytest.fixture(scope="module")
def prompts(loaded):
    cfg = VarroConfig()
    return [(h.id, prompt_ids(cfg, loaded.tokenizer, h, "2025-03-04")) for h in HEADLINES]


def seeds_for(prompts, offset=0):
    return {(hid, i): 1000 * n + i + offset for n, (hid, _) in enumerate(prompts) for i in range(G)}


def run(loaded, prompts, sampler=SAMPLER, seeds=None, batch_size=64):
    return generate_rollouts(
        loaded,
        prompts,
        group_size=G,
        sampler=sampler,
        seeds=seeds or seeds_for(prompts),
        batch_size=batch_size,
        eos_token_ids=loaded.tokenizer.eos_token_ids,
    )


@pytest.fixture(scope="module")
def records(loaded, prompts):
    return run(loaded, prompts)


def test_records_come_in_prompt_then_index_order_with_text_and_score(records):
    assert [(r.headline_id, r.index) for r in records] == [(h.id, i) for h in HEADLINES for i in range(G)]
    assert all(0.0 <= r.structure_score <= 1.0 for r in records)
    assert np.mean([r.structure_score for r in records]) > 0.3  # the tiny model writes the format
    assert len({tuple(r.response_ids) for r in records}) > len(records) // 2  # samples vary


def test_token_ids_end_with_eos_where_generation_stopped(loaded, records):
    eos = set(loaded.tokenizer.eos_token_ids)
    stopped = [r for r in records if not r.truncated]
    assert stopped, "the tiny model should finish some predictions within 160 tokens"
    for r in stopped:
        assert r.response_ids[-1] in eos and not eos & set(r.response_ids[:-1])
        assert loaded.tokenizer.decode(r.response_ids[:-1]) == r.text
    short = run(loaded, prompts_subset(loaded), sampler=SamplerSpec(name="s", max_tokens=12))
    for r in short:
        assert len(r.response_ids) <= 12
        assert r.truncated == (r.response_ids[-1] not in eos)
    assert any(r.truncated for r in short)


def prompts_subset(loaded):
    return [(HEADLINES[0].id, prompt_ids(VarroConfig(), loaded.tokenizer, HEADLINES[0], "2025-03-04"))]


def plain_logprobs(model, prompt, response, temperature):
    """An independent recomputation: one unpadded, uncached fp32 forward pass."""
    logits = model(mx.array([prompt + response[:-1]]))[0, len(prompt) - 1 :].astype(mx.float32) / temperature
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return np.array(mx.take_along_axis(logprobs, mx.array(response)[:, None], axis=-1).squeeze(-1))


def test_recorded_logprobs_equal_a_fresh_teacher_forced_pass(loaded, prompts, records):
    prompt_of = dict(prompts)
    for r in records[:: G - 1]:
        fresh = plain_logprobs(loaded.model, prompt_of[r.headline_id], r.response_ids, SAMPLER.temperature)
        assert len(r.logprobs) == len(r.response_ids)
        np.testing.assert_allclose(r.logprobs, fresh, atol=2e-5)
    again = behaviour_logprobs(
        loaded.model,
        [prompt_of[r.headline_id] for r in records],
        [r.response_ids for r in records],
        temperature=SAMPLER.temperature,
    )
    assert all(np.array_equal(np.float32(r.logprobs), a) for r, a in zip(records, again, strict=True))


def test_untruncated_t1_logprobs_are_the_ones_the_sampler_used(loaded, prompts):
    """At T = 1 without truncation the recorded log-prob is the log of the probability the token was drawn with."""
    wide = SamplerSpec(name="wide", temperature=1.0, top_p=1.0, top_k=0, max_tokens=40)
    seeds = seeds_for(prompts)
    engine = sample_responses(
        loaded, prompts, group_size=G, sampler=wide, seeds=seeds, eos_token_ids=loaded.tokenizer.eos_token_ids
    )
    recorded = run(loaded, prompts, sampler=wide, seeds=seeds)
    prompt_of = dict(prompts)
    for e, r in zip(engine, recorded, strict=True):
        assert e.response_ids == r.response_ids
        np.testing.assert_allclose(r.logprobs, e.logprobs, atol=2e-5)
        fresh = plain_logprobs(loaded.model, prompt_of[r.headline_id], r.response_ids, 1.0)
        np.testing.assert_allclose(r.logprobs, fresh, atol=2e-5)


def test_a_bf16_checkpoint_records_fp32_teacher_forced_logprobs(tiny_model_path, tmp_path, prompts):
    """The recorded log-probs of a bf16 checkpoint come from the fp32 pass; the checkpoint stays bf16."""
    cache = ModelCache(VarroConfig(data_dir=str(tmp_path)))
    half = cache.load(cache.base_ref())
    half.model.set_dtype(mx.bfloat16)
    sampler = SamplerSpec(name="short", max_tokens=24)
    out = generate_rollouts(
        half,
        prompts[:1],
        group_size=2,
        sampler=sampler,
        seeds=seeds_for(prompts),
        batch_size=2,
        eos_token_ids=half.tokenizer.eos_token_ids,
    )
    assert all(p.dtype == mx.bfloat16 for _, p in tree_flatten(half.model.parameters()))
    upcast = cache.load(cache.base_ref()).model
    upcast.update(tree_map(lambda p: p.astype(mx.float32), half.model.parameters()))
    for r in out:
        fresh = plain_logprobs(upcast, prompts[0][1], r.response_ids, sampler.temperature)
        np.testing.assert_allclose(r.logprobs, fresh, atol=2e-5)


def test_a_bf16_checkpoint_decodes_as_its_float32_model_on_the_numpy_kernels(tmp_path, prompts):
    """On the CPU's NumPy kernels a bf16 checkpoint decodes on a float32 copy: the float32 model's own tokens."""
    caches = [ModelCache(VarroConfig(data_dir=str(tmp_path / side))) for side in ("half", "full")]
    half, full = (c.load(c.base_ref()) for c in caches)  # two caches: two models
    assert half.model is not full.model
    half.model.set_dtype(mx.bfloat16)
    full.model.update(tree_map(lambda p: p.astype(mx.float32), half.model.parameters()))
    sampler = SamplerSpec(name="short", max_tokens=24)

    def decode(loaded, kernels):
        return sample_responses(
            loaded,
            prompts[:2],
            group_size=3,
            sampler=sampler,
            seeds=seeds_for(prompts),
            eos_token_ids=loaded.tokenizer.eos_token_ids,
            kernels=kernels,
        )

    on_copy, on_float32 = decode(half, "numpy"), decode(full, "numpy")
    assert [(r.response_ids, r.logprobs) for r in on_copy] == [(r.response_ids, r.logprobs) for r in on_float32]
    assert all(p.dtype == mx.bfloat16 for _, p in tree_flatten(half.model.parameters()))  # restored
    in_bf16 = decode(half, "mlx")  # MLX's kernels decode in the checkpoint's own dtype
    assert [r.logprobs for r in in_bf16] != [r.logprobs for r in decode(full, "mlx")]


def test_same_seed_same_tokens(loaded, prompts, records):
    assert [r.response_ids for r in run(loaded, prompts)] == [r.response_ids for r in records]
    reseeded = run(loaded, prompts, seeds=seeds_for(prompts, offset=7))
    assert [r.response_ids for r in reseeded] != [r.response_ids for r in records]


def test_passes_fix_the_batch_composition(loaded, prompts, records):
    """One headline per pass gives each headline exactly what it gets when generated alone."""
    per_headline = run(loaded, prompts, batch_size=G)
    alone = run(loaded, prompts[1:2], seeds=seeds_for(prompts), batch_size=G)
    assert [r.response_ids for r in alone] == [r.response_ids for r in per_headline if r.headline_id == "h-fed"]


def test_keys_are_per_rollout_even_where_batch_numerics_differ(loaded, prompts, records):
    """Another batch composition changes logits only in their last bits (the engine does not
    bit-match across batches); with per-roll-out keys the draws still agree, at least for a long prefix."""
    alone = run(loaded, prompts[1:2], seeds=seeds_for(prompts), batch_size=G)
    together = [r for r in records if r.headline_id == "h-fed"]
    for a, b in zip(alone, together, strict=True):
        agree = next(
            (i for i, (x, y) in enumerate(zip(a.response_ids, b.response_ids, strict=True)) if x != y),
            min(len(a.response_ids), len(b.response_ids)),
        )
        assert agree >= 32


def test_greedy_ignores_seeds(loaded, prompts):
    greedy = SamplerSpec(name="greedy", temperature=0.0, top_p=1.0, top_k=0, max_tokens=24)
    out = run(loaded, prompts[:1], sampler=greedy)
    assert len({tuple(r.response_ids) for r in out}) == 1


def test_sample_tokens_respects_top_k_top_p_and_the_distribution():
    """Draws follow the tempered, truncated, renormalised distribution exactly (4000 draws, about 4 sigma)."""
    n = 4000
    logprobs = mx.broadcast_to(mx.log(mx.array([[0.5, 0.3, 0.15, 0.05]])), (n, 4))
    uniforms = mx.random.uniform(shape=(n,), key=mx.random.key(0))

    def frequencies(spec):
        return np.bincount(np.array(sample_tokens(logprobs, uniforms, spec)), minlength=4) / n

    p = np.array([0.5, 0.3, 0.15, 0.05])
    np.testing.assert_allclose(frequencies(SamplerSpec(temperature=1.0, top_p=1.0, top_k=0)), p, atol=0.03)
    np.testing.assert_allclose(
        frequencies(SamplerSpec(temperature=0.5, top_p=1.0, top_k=0)), p**2 / (p**2).sum(), atol=0.03
    )
    two = np.array([0.625, 0.375, 0.0, 0.0])
    np.testing.assert_array_equal(frequencies(SamplerSpec(temperature=1.0, top_p=1.0, top_k=2)) > 0, two > 0)
    np.testing.assert_allclose(frequencies(SamplerSpec(temperature=1.0, top_p=1.0, top_k=2)), two, atol=0.03)
    np.testing.assert_allclose(frequencies(SamplerSpec(temperature=1.0, top_p=0.7, top_k=0)), two, atol=0.03)
    np.testing.assert_array_equal(frequencies(SamplerSpec(temperature=1.0, top_p=0.1, top_k=3)), [1, 0, 0, 0])
    greedy = sample_tokens(
        mx.array([[0.1, 2.0, 0.3], [3.0, 1.0, 0.0]]), mx.array([0.9, 0.9]), SamplerSpec(temperature=0.0)
    )
    assert greedy.tolist() == [1, 0]


def test_a_row_draws_the_same_token_in_any_batch():
    """Sampling is row-wise: a row's token depends on its own logits and uniform, not on its neighbours."""
    logits = mx.random.normal((32, 300), key=mx.random.key(1)) * 3
    uniforms = mx.random.uniform(shape=(32,), key=mx.random.key(2))
    spec = SamplerSpec(temperature=0.8, top_p=0.95, top_k=50)
    together = sample_tokens(logits, uniforms, spec).tolist()
    alone = [sample_tokens(logits[i : i + 1], uniforms[i : i + 1], spec).item() for i in range(32)]
    permutation = mx.array(np.random.default_rng(0).permutation(32))
    shuffled = sample_tokens(logits[permutation], uniforms[permutation], spec).tolist()
    assert together == alone
    assert shuffled == [together[i] for i in permutation.tolist()]
    assert len(set(together)) > 8


def test_top_k_keeps_exactly_k_and_breaks_ties_towards_lower_ids():
    """Ties at the k-th value keep the lower token ids, so the candidate set never depends on sort stability."""
    logits = np.array([[1.0, 3.0, 2.0, 2.0, 2.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]], dtype=np.float32)
    spec = SamplerSpec(temperature=1.0, top_p=1.0, top_k=3)
    seen = [set(), set()]
    for u in np.linspace(0.0, 0.999, 200, dtype=np.float32):
        for row, token in enumerate(sample_tokens(logits, np.array([u, u]), spec).tolist()):
            seen[row].add(token)
    assert seen == [{1, 2, 3}, {0, 1, 2}]  # row 0: 3.0 and the first two of the three 2.0s


def test_candidates_on_the_device_equal_the_hosts_including_ties():
    """The GPU path (top-k where the logits are) and the CPU path (NumPy) pick the same candidates and values."""
    from varro.generation import device_candidates, host_candidates

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(16, 300)).astype(np.float32) * 3
    logits[1, [5, 9, 40, 41]] = logits[1].max() + 1  # a tie inside the top k
    boundary = np.sort(logits[2])[-3]
    logits[2, [7, 100, 250]] = boundary  # a tie straddling the k-th value
    logits[3] = 0.5  # all tied
    for k in (1, 3, 50, 300):
        host, device = host_candidates(logits, k), device_candidates(mx.array(logits), k)
        np.testing.assert_array_equal(device.ids, host.ids)
        np.testing.assert_array_equal(device.values, host.values)
        np.testing.assert_allclose(device.lse, host.lse, rtol=1e-6)
        assert (np.diff(host.ids, axis=-1) > 0).all() and host.ids.shape == (16, k)
    assert host_candidates(logits, 3).ids[3].tolist() == [0, 1, 2]  # ties go to the lower ids
    with pytest.raises(GenerationError, match="non-finite logits"):
        device_candidates(mx.array([[0.0, np.nan, 1.0]]), 1)


def test_device_candidates_settle_boundary_ties_on_the_host(monkeypatch):
    """MLX's CPU partition happens to order ties by index; a GPU's need not, so such rows are redone exactly."""
    import varro.generation.sampling as generation

    calls = []
    real = generation.host_candidates
    monkeypatch.setattr(generation, "host_candidates", lambda v, k: calls.append(v.shape) or real(v, k))
    logits = np.array([[3.0, 1.0, 2.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.5, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]], np.float32)
    got = generation.device_candidates(mx.array(logits), 2)
    assert calls == [(1, 5), (1, 5)]  # rows 0 and 2 tie at the 2nd value; row 1 does not
    assert got.ids.tolist() == [[0, 2], [0, 2], [0, 1]]


def test_non_finite_logits_are_refused_with_a_clear_error():
    spec = SamplerSpec(temperature=0.8, top_p=0.95, top_k=2)
    with pytest.raises(GenerationError, match="non-finite logits"):
        sample_tokens(np.array([[0.0, np.nan, 1.0]]), np.array([0.5]), spec)
    with pytest.raises(GenerationError, match=r"\(batch, vocab\)"):
        sample_tokens(np.zeros(3), np.array([0.5]), spec)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sampler=SamplerSpec(temperature=-1.0)), "temperature"),
        (dict(sampler=SamplerSpec(top_p=0.0)), "top_p"),
        (dict(sampler=SamplerSpec(max_tokens=0)), "max_tokens"),
        (dict(batch_size=0), "batch_size"),
        (dict(seeds={}), "no seed"),
        (dict(eos_token_ids=[]), "EOS"),
    ],
)
def test_bad_inputs_fail_with_a_named_problem(loaded, prompts, kwargs, message):
    args = dict(
        group_size=G,
        sampler=SAMPLER,
        seeds=seeds_for(prompts),
        batch_size=8,
        eos_token_ids=loaded.tokenizer.eos_token_ids,
    )
    with pytest.raises(GenerationError, match="only once"):
        generate_rollouts(loaded, prompts + prompts[:1], **args)
    args.update(kwargs)
    with pytest.raises(GenerationError, match=message):
        generate_rollouts(loaded, prompts, **args)


def test_auto_batch_fills_the_kv_budget_with_whole_headlines(loaded):
    """ "auto" rows come from the checkpoint's shape and dtype and recorded settings only."""
    from mlx_lm.models import qwen3

    from varro.generation import MAX_AUTO_ROWS, PROMPT_ALLOWANCE, batch_rows, kv_bytes_per_token

    tiny = loaded.model
    args = tiny.args
    assert kv_bytes_per_token(tiny) == 2 * args.num_hidden_layers * args.num_key_value_heads * args.head_dim * 4
    assert batch_rows("auto", tiny, group_size=8, max_tokens=160, kv_cache_mb=4096) == MAX_AUTO_ROWS
    assert batch_rows(48, tiny, group_size=8, max_tokens=160, kv_cache_mb=1) == 48  # a number is taken as given
    per_row = kv_bytes_per_token(tiny) * (PROMPT_ALLOWANCE + 160)
    assert per_row == 851968 and batch_rows("auto", tiny, group_size=8, max_tokens=160, kv_cache_mb=40) == 48
    assert batch_rows("auto", tiny, group_size=8, max_tokens=160 * 1000, kv_cache_mb=1) == 8  # never below one headline
    # A Qwen3-0.6B-shaped bf16 model: 28 layers x 8 KV heads x 128 x 2 bytes x 2 = 112 KiB a token.
    big = qwen3.Model(
        qwen3.ModelArgs.from_dict(
            dict(
                model_type="qwen3",
                hidden_size=64,
                num_hidden_layers=28,
                intermediate_size=64,
                num_attention_heads=16,
                num_key_value_heads=8,
                head_dim=128,
                vocab_size=32,
                rms_norm_eps=1e-6,
                max_position_embeddings=512,
                rope_theta=1e6,
                tie_word_embeddings=True,
            )
        )
    )
    big.set_dtype(mx.bfloat16)
    assert kv_bytes_per_token(big) == 114688
    assert batch_rows("auto", big, group_size=8, max_tokens=160, kv_cache_mb=4096) == 88
    with pytest.raises(GenerationError, match="batch_size"):
        batch_rows("big", tiny, group_size=8, max_tokens=160, kv_cache_mb=4096)
