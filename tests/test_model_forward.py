"""The inference forward with NumPy softmax/SwiGLU: the same function as mlx_lm's, checked against float64."""

import warnings

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models import qwen3
from mlx_lm.models.cache import make_prompt_cache
from qwen3_reference import reference_logits

from events.schema import Headline
from varro.config import VarroConfig
from varro.generation.prefill import merged_cache
from varro.model.forward import ForwardError, inference_forward, project, resolve, softmax, swiglu
from varro.prompts import prompt_ids


@pytest.fixture(scope="module")
def prompts(loaded):
    texts = ["Oil falls as OPEC signals higher output", "Fed cuts rates", "Gold slides as the dollar firms again today"]
    return [
        prompt_ids(VarroConfig(), loaded.tokenizer, Headline(id=f"h{i}", text=t, source="Reuters"), "2025-03-04")
        for i, t in enumerate(texts)
    ]


def logits_of(model, kernels, ids):
    forward = inference_forward(model, kernels)
    hidden = forward(mx.array([ids]), make_prompt_cache(model))
    return np.array(project(model, hidden).astype(mx.float32))[0]


def test_both_kernels_compute_the_float64_function(loaded, prompts):
    """NumPy's softmax/SwiGLU are as close to the exact (float64) logits as MLX's own kernels are."""
    ids = prompts[0] + prompts[1][:40]
    exact = reference_logits(loaded.model, ids)
    errors = {k: np.abs(logits_of(loaded.model, k, ids) - exact).max() for k in ("mlx", "numpy")}
    assert errors["mlx"] < 1e-4 and errors["numpy"] < 1e-4, errors
    assert errors["numpy"] <= 2 * errors["mlx"] + 1e-5, errors
    stock = np.array(loaded.model(mx.array([ids])).astype(mx.float32))[0]
    np.testing.assert_array_equal(logits_of(loaded.model, "mlx", ids), stock)  # "mlx" is mlx_lm's forward


def test_batched_decoding_with_left_padding_matches_the_stock_forward(loaded, prompts):
    """Prompts of different lengths (left padding in the batch cache), G rows each, several decoding steps."""
    model = loaded.model
    stock, ours = inference_forward(model, "mlx"), inference_forward(model, "numpy")
    caches = {k: merged_cache(f, model, prompts, 2) for k, f in (("mlx", stock), ("numpy", ours))}
    tokens = mx.array([[p[-1]] for p in prompts for _ in range(2)])
    for _ in range(6):
        a = np.array(project(model, stock(tokens, caches["mlx"])[:, -1]).astype(mx.float32))
        b = np.array(project(model, ours(tokens, caches["numpy"])[:, -1]).astype(mx.float32))
        np.testing.assert_allclose(b, a, atol=1e-4)
        tokens = mx.array(a.argmax(-1))[:, None]


def test_numpy_kernels_are_deterministic(loaded, prompts):
    ids = prompts[2]
    np.testing.assert_array_equal(logits_of(loaded.model, "numpy", ids), logits_of(loaded.model, "numpy", ids))


def test_kernel_choice(loaded):
    assert resolve(loaded.model, "auto") == "numpy"  # the CPU, a Qwen3 model
    assert resolve(loaded.model, "mlx") == "mlx"
    with pytest.raises(ForwardError, match="'auto', 'mlx' or 'numpy'"):
        resolve(loaded.model, "fast")
    other = qwen3.Model(qwen3.ModelArgs.from_dict({**vars(loaded.model.args), "model_type": "llama"}))
    assert resolve(other, "auto") == "mlx"
    with pytest.raises(ForwardError, match="not 'llama'"):
        resolve(other, "numpy")


def test_softmax_keeps_a_fully_masked_row_finite_and_swiglu_has_its_limits():
    scores = np.array([[1.0, 2.0, 3.0], [5.0, 1.0, 0.0]], dtype=np.float32)
    mask = np.array([[True, True, False], [False, False, False]])
    probs = softmax(scores, mask)
    np.testing.assert_allclose(probs[0], [np.exp(-1) / (1 + np.exp(-1)), 1 / (1 + np.exp(-1)), 0.0], rtol=1e-6)
    assert np.isfinite(probs).all() and probs[1].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(softmax(scores, np.zeros_like(scores)), softmax(scores, None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning for a very negative gate
        out = swiglu(np.array([-1000.0, 0.0, 2.0], dtype=np.float32), np.array([3.0, 3.0, 0.5], dtype=np.float32))
    np.testing.assert_allclose(out, [0.0, 0.0, 2.0 / (1 + np.exp(-2.0)) * 0.5], rtol=1e-6)


def test_generation_on_either_kernels_records_the_same_rollouts(loaded, prompts):
    """The full path on MLX's kernels and on NumPy's: the same tokens in practice, log-probs within 5e-5."""
    from events.schema import SamplerSpec
    from varro.generation import behaviour_logprobs, generate_rollouts

    sampler = SamplerSpec(name="t", temperature=0.8, top_p=0.95, top_k=50, max_tokens=48)
    named = [(f"h{i}", ids) for i, ids in enumerate(prompts)]
    seeds = {(h, i): 100 * n + i for n, (h, _) in enumerate(named) for i in range(4)}
    runs = {
        k: generate_rollouts(
            loaded,
            named,
            group_size=4,
            sampler=sampler,
            seeds=seeds,
            batch_size=16,
            eos_token_ids=loaded.tokenizer.eos_token_ids,
            kernels=k,
        )
        for k in ("mlx", "numpy")
    }
    same = sum(a.response_ids == b.response_ids for a, b in zip(runs["mlx"], runs["numpy"], strict=True))
    assert same >= len(runs["mlx"]) * 3 // 4, f"only {same} of {len(runs['mlx'])} roll-outs agree"
    records = runs["numpy"]
    prompt_of = dict(named)
    on_mlx = behaviour_logprobs(
        loaded.model,
        [prompt_of[r.headline_id] for r in records],
        [r.response_ids for r in records],
        temperature=0.8,
        kernels="mlx",
    )
    for record, other in zip(records, on_mlx, strict=True):
        np.testing.assert_allclose(record.logprobs, other, atol=5e-5)
