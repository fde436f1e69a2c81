"""Chunked fp32 log-probs over right-padded batches."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from gspo_fixtures import VOCAB, make_groups, tiny_model
from mlx.utils import tree_flatten

from varro.gspo.batch import collate
from varro.gspo.logprobs import UnsupportedModelError, token_logprobs


def reference_logprobs(model, tokens):
    """Unchunked: the full log-softmax over the whole sequence at once."""
    logits = model(mx.array([tokens])).astype(mx.float32)[0, :-1]
    lp = nn.log_softmax(logits, axis=-1)
    return np.array(mx.take_along_axis(lp, mx.array(tokens[1:])[:, None], axis=-1)[:, 0])


@pytest.fixture(scope="module")
def model():
    return tiny_model(1)


@pytest.mark.parametrize("chunk", [1, 3, 16, 1000])
def test_chunked_equals_full_log_softmax(model, chunk):
    tokens = np.random.default_rng(0).integers(0, VOCAB, (2, 23)).astype(np.int32)
    got = np.array(token_logprobs(model, mx.array(tokens), chunk=chunk, start=4))
    assert got.dtype == np.float32 and got.shape == (2, 18)
    for b in range(2):
        np.testing.assert_allclose(got[b], reference_logprobs(model, tokens[b].tolist())[4:], atol=2e-5)


def test_batched_right_padded_equals_each_sequence_alone(model):
    seqs = [s for g in make_groups(2, 4, seed=3) for s in g]
    batch = collate(seqs, loss_on="full")
    got = np.array(token_logprobs(model, mx.array(batch.tokens), chunk=5))
    for b, s in enumerate(seqs):
        alone = reference_logprobs(model, list(s.prompt_ids + s.response_ids))
        np.testing.assert_allclose(got[b, : s.length - 1], alone, atol=2e-5)


def test_padding_id_and_width_do_not_change_real_positions(model):
    seqs = [s for g in make_groups(1, 5, seed=4) for s in g]
    a = collate(seqs, loss_on="response", pad_id=0)
    b = collate(seqs, loss_on="response", pad_id=VOCAB - 1)
    wide = np.concatenate([b.tokens, np.full((len(seqs), 32), 5, np.int32)], axis=1)
    la = np.array(token_logprobs(model, mx.array(a.tokens), chunk=7, start=a.start))
    lb = np.array(token_logprobs(model, mx.array(wide), chunk=7, start=b.start))
    mask = a.loss_mask > 0
    np.testing.assert_allclose(la[mask], lb[:, : la.shape[1]][mask], atol=2e-6)


def test_chunked_gradient_equals_unchunked(model):
    tokens = mx.array(np.random.default_rng(1).integers(0, VOCAB, (3, 17)).astype(np.int32))

    def chunked(params):
        model.update(params)
        return token_logprobs(model, tokens, chunk=4).sum()

    def full(params):
        model.update(params)
        lp = nn.log_softmax(model(tokens).astype(mx.float32)[:, :-1], axis=-1)
        return mx.take_along_axis(lp, tokens[:, 1:, None], axis=-1).sum()

    params = model.trainable_parameters()
    g1 = dict(tree_flatten(mx.grad(chunked)(params)))
    g2 = dict(tree_flatten(mx.grad(full)(params)))
    model.update(params)
    for k in g2:
        np.testing.assert_allclose(np.array(g1[k]), np.array(g2[k]), atol=1e-4, rtol=1e-4)


def test_unsupported_models_and_inputs_are_refused(model):
    with pytest.raises(ValueError, match="logprob_chunk"):
        token_logprobs(model, mx.zeros((1, 4), dtype=mx.int32), chunk=0)
    with pytest.raises(ValueError, match="length"):
        token_logprobs(model, mx.zeros((1, 1), dtype=mx.int32), chunk=4)
    with pytest.raises(UnsupportedModelError):
        token_logprobs(nn.Linear(2, 2), mx.zeros((1, 4), dtype=mx.int32), chunk=4)


@pytest.mark.parametrize("kept", [True, False], ids=["kept", "recomputed"])
@pytest.mark.parametrize("kernels", ["mlx", "numpy"])
def test_chunk_head_matches_a_float64_oracle_in_value_and_gradient(kernels, kept):
    """Each output head (projection, temperature, log-softmax; MLX's or NumPy's, logits kept or not) against float64."""
    from varro.gspo.logprobs import chunk_head

    head = chunk_head(kernels, kept)
    rng = np.random.default_rng(7)
    hidden, weight = rng.normal(0, 1, (2, 5, 16)), rng.normal(0, 0.5, (VOCAB, 16))
    targets, cot, inv_temp = rng.integers(0, VOCAB, (2, 5)), rng.normal(0, 1, (2, 5)), 1 / 0.7

    logits = hidden @ weight.T * inv_temp
    top = logits.max(-1, keepdims=True)
    lse = top + np.log(np.exp(logits - top).sum(-1, keepdims=True))
    want = np.take_along_axis(logits, targets[..., None], -1)[..., 0] - lse[..., 0]
    d_logits = -cot[..., None] * np.exp(logits - lse)
    np.put_along_axis(
        d_logits, targets[..., None], np.take_along_axis(d_logits, targets[..., None], -1) + cot[..., None], -1
    )
    d_logits *= inv_temp
    want_dh, want_dw = d_logits @ weight, d_logits.reshape(-1, VOCAB).T @ hidden.reshape(-1, 16)

    primals = [mx.array(hidden, dtype=mx.float32), mx.array(weight, dtype=mx.float32)]
    t, it = mx.array(targets.astype(np.int32)), mx.array(inv_temp, dtype=mx.float32)
    (got,), (dh, dw) = mx.vjp(lambda h, w: head(h, w, t, it), primals, [mx.array(cot, dtype=mx.float32)])
    np.testing.assert_allclose(np.array(got), want, atol=2e-5)
    np.testing.assert_allclose(np.array(dh), want_dh, atol=2e-5)
    np.testing.assert_allclose(np.array(dw), want_dw, atol=2e-5)


@pytest.mark.parametrize("kernels", ["mlx", "numpy"])
def test_kept_and_recomputed_logits_give_the_same_bits(model, monkeypatch, kernels):
    """Whether a micro-batch keeps its logits (or softmax) for the backward (`KEEP_LOGITS_BYTES`) changes no bit."""
    import varro.gspo.logprobs as logprobs

    tokens = mx.array(np.random.default_rng(2).integers(0, VOCAB, (3, 19)).astype(np.int32))
    params = model.trainable_parameters()

    def loss(p):
        model.update(p)
        return (token_logprobs(model, tokens, chunk=5, start=2, kernels=kernels) * mx.arange(16)).sum()

    runs = {}
    for budget in (0, 1 << 40):  # every chunk checkpointed; every chunk's logits kept
        monkeypatch.setattr(logprobs, "KEEP_LOGITS_BYTES", budget)
        assert logprobs.keeps_logits(3, 16, VOCAB) == bool(budget)
        value, grads = mx.value_and_grad(loss)(params)
        runs[budget] = (value, dict(tree_flatten(grads)))
    model.update(params)
    (v0, g0), (v1, g1) = runs[0], runs[1 << 40]
    assert v0.item() == v1.item()
    assert g0.keys() == g1.keys() and all(mx.array_equal(g0[k], g1[k]).item() for k in g0)


def test_the_qwen3_06b_training_batch_keeps_its_logits_and_a_large_one_does_not():
    from varro.gspo.logprobs import keeps_logits

    assert keeps_logits(4, 127, 151_936)  # 309 MB: bench_train's 4 x 128 tokens
    assert not keeps_logits(8, 511, 151_936)  # 2.5 GB: checkpointed
