"""Decoding over prompts held once per group of roll-outs: one softmax over prompt and generated keys."""

import mlx.core as mx
import numpy as np
import pytest
from qwen3_reference import reference_logits

from events.schema import Headline
from varro.config import VarroConfig
from varro.generation.prefill import merged_cache, shared_prompt_cache
from varro.model.forward import inference_forward, project
from varro.model.shared_prompt import SharedPromptCache, shared_prompt_caches
from varro.prompts import prompt_ids

KV_HEADS, REPEATS, DIM = 2, 3, 8


def exact_attention(q, prompt_k, prompt_v, own_k, own_v, scale):
    """Float64 attention of one row: q (heads, dim) over its prompt's and its own keys (kv_heads, n, dim)."""
    keys = np.concatenate([prompt_k, own_k], axis=1).astype(np.float64)
    values = np.concatenate([prompt_v, own_v], axis=1).astype(np.float64)
    out = []
    for head, query in enumerate(q.astype(np.float64)):
        kv = head // REPEATS
        scores = keys[kv] @ query * scale
        weights = np.exp(scores - scores.max())
        out.append(weights @ values[kv] / weights.sum())
    return np.stack(out)


def test_attention_is_one_softmax_over_each_rows_prompt_and_own_keys():
    """Random keys: prompts of 5, 0 and 9 positions (padded to 9), 3 rows each; then rows dropped, a group too."""
    rng = np.random.default_rng(7)
    lengths = [5, 0, 9]
    prompts = [[tuple(rng.standard_normal((KV_HEADS, n, DIM), dtype=np.float32) for _ in range(2))] for n in lengths]
    (cache,) = shared_prompt_caches(prompts, [0, 0, 0, 1, 1, 1, 2, 2, 2], capacity=6)
    rows = list(range(9))  # the roll-outs still in the cache, in order
    own: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {r: [] for r in rows}
    scale = DIM**-0.5
    for step, keep in enumerate([None, None, [0, 2, 5, 6, 7, 8], [0, 1, 4], None]):
        if keep is not None:
            cache.filter(keep)
            rows = [rows[i] for i in keep]
        q = rng.standard_normal((len(rows), KV_HEADS * REPEATS, 1, DIM), dtype=np.float32)
        k, v = (rng.standard_normal((len(rows), KV_HEADS, 1, DIM), dtype=np.float32) for _ in range(2))
        out = np.array(cache.attend(mx.array(q), mx.array(k), mx.array(v), scale))
        assert cache.length == step + 1
        for i, row in enumerate(rows):
            own[row].append((k[i], v[i]))
            prompt_k, prompt_v = prompts[row // 3][0]
            own_k, own_v = (np.concatenate([kv[j] for kv in own[row]], axis=1) for j in (0, 1))
            exact = exact_attention(q[i, :, 0], prompt_k, prompt_v, own_k, own_v, scale)
            np.testing.assert_allclose(out[i, :, 0], exact, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(
            np.array(cache.offset), [lengths[row // 3] + step + 1 for row in rows]
        )  # the next RoPE position
    assert len(cache.prompt_lengths) == 2  # the prompt no row reads any more was dropped


def test_a_full_cache_and_a_misshapen_step_are_refused():
    prompts = [[tuple(np.zeros((KV_HEADS, 2, DIM), np.float32) for _ in range(2))]]
    (cache,) = shared_prompt_caches(prompts, [0, 0], capacity=1)
    step = [mx.zeros((2, KV_HEADS * REPEATS, 1, DIM))] + [mx.zeros((2, KV_HEADS, 1, DIM))] * 2
    with pytest.raises(ValueError, match="one decoding step for 2 rows"):
        cache.attend(mx.zeros((3, KV_HEADS * REPEATS, 1, DIM)), step[1], step[2], 1.0)
    cache.attend(*step, 1.0)
    with pytest.raises(ValueError, match="capacity"):
        cache.attend(*step, 1.0)
    with pytest.raises(ValueError, match="group by group"):
        SharedPromptCache(np.zeros((2, 1, 1, 1)), np.zeros((2, 1, 1, 1)), [1, 1], [1, 0], 4)


def pairs(prompts):
    """Two rows per prompt."""
    return [h for h in range(len(prompts)) for _ in range(2)]


@pytest.fixture(scope="module")
def prompts(loaded):
    texts = ["Oil falls as OPEC signals higher output", "Fed cuts rates", "Gold slides as the dollar firms again today"]
    ids = [
        prompt_ids(VarroConfig(), loaded.tokenizer, Headline(id=f"h{i}", text=t, source="Reuters"), "2025-03-04")
        for i, t in enumerate(texts)
    ]
    return [*ids, ids[0][:1]]  # a one-token prompt: nothing to prefill, decoding starts at position 0


def test_decoding_on_shared_prompts_computes_the_float64_function(loaded, prompts):
    """Every row's logits at every step, prompts of four lengths, rows dropped midway, against float64."""
    model = loaded.model
    forward = inference_forward(model, "numpy")
    cache = shared_prompt_cache(forward, model, prompts, pairs(prompts), capacity=8)
    rows = [list(prompts[p]) for p in range(len(prompts)) for _ in range(2)]  # each row's tokens fed so far
    worst = 0.0
    for step in range(6):
        if step == 3:  # drop rows 1, 4 and 5: the grid is no longer dense, one prompt goes
            keep = [0, 2, 3, 6, 7]
            for layer in cache:
                layer.filter(keep)
            rows = [rows[i] for i in keep]
        hidden = forward(mx.array([fed[-1] for fed in rows])[:, None], cache)[:, -1]
        logits = np.array(project(model, hidden).astype(mx.float32))
        for fed, row_logits in zip(rows, logits, strict=True):
            worst = max(worst, float(np.abs(row_logits - reference_logits(model, fed)[-1]).max()))
            fed.append(int(row_logits.argmax()))
    assert worst < 1e-4, worst


def test_shared_prompts_decode_as_the_stock_batch_cache(loaded, prompts):
    """The same greedy tokens and logits (to float32 rounding) as mlx_lm's batch cache under mlx_lm's forward."""
    model = loaded.model
    stock, ours = inference_forward(model, "mlx"), inference_forward(model, "numpy")
    stock_cache = merged_cache(stock, model, prompts, 2)
    shared = shared_prompt_cache(ours, model, prompts, pairs(prompts), capacity=12)
    tokens = mx.array([[p[-1]] for p in prompts for _ in range(2)])
    for _ in range(12):
        a = np.array(project(model, stock(tokens, stock_cache)[:, -1]).astype(mx.float32))
        b = np.array(project(model, ours(tokens, shared)[:, -1]).astype(mx.float32))
        np.testing.assert_allclose(b, a, atol=1e-4)
        tokens = mx.array(a.argmax(-1))[:, None]
