"""The GSPO / GSPO-token / GRPO objectives against an independent NumPy implementation,
and the properties that make GSPO what it is (clip quadrants, variant equivalences, k3)."""

import mlx.core as mx
import numpy as np
import pytest

from varro.gspo.objective import ClipRange, k3, policy_loss

CLIP = ClipRange(0.05, 0.08)


# ------------------------------------------------------------ NumPy reference


def np_loss_and_grad(logp, old, mask, adv, variant, clip, denom, w=None, ref=None, beta=0.0):
    """Value and analytic d(loss)/d(logp) in float64, written from the formulas, not the code."""
    B, T = logp.shape
    w = np.ones(B) if w is None else w
    value, grad = 0.0, np.zeros((B, T))
    lo, hi = 1 - clip.low, 1 + clip.high
    for i in range(B):
        t = mask[i] > 0
        n = t.sum()
        a_t = adv[i] if np.ndim(adv[i]) else np.full(T, adv[i])
        if variant in ("gspo", "gspo_token"):
            s = np.exp(np.mean(logp[i, t] - old[i, t]))
            if variant == "gspo":
                a = adv[i]
                j = min(s * a, np.clip(s, lo, hi) * a)
                active = not ((a > 0 and s > hi) or (a < 0 and s < lo))
                grad[i, t] = -w[i] * active * s * a / n
            else:
                terms = np.minimum(s * a_t[t], np.clip(s, lo, hi) * a_t[t])
                j = terms.mean()
                active = ~(((a_t[t] > 0) & (s > hi)) | ((a_t[t] < 0) & (s < lo)))
                grad[i, t] = -w[i] * active * s * a_t[t] / n
        else:
            r = np.exp(logp[i, t] - old[i, t])
            a = adv[i]
            j = np.minimum(r * a, np.clip(r, lo, hi) * a).mean()
            active = ~(((a > 0) & (r > hi)) | ((a < 0) & (r < lo)))
            grad[i, t] = -w[i] * active * r * a / n
        value += -w[i] * j
        if ref is not None:
            d = ref[i, t] - logp[i, t]
            value += beta * np.mean(np.exp(d) - d - 1)
            grad[i, t] += beta * (1 - np.exp(d)) / n
    return value / denom, grad / denom


def random_case(seed, per_token_adv=False):
    rng = np.random.default_rng(seed)
    B, T = 6, 9
    lengths = rng.integers(1, T + 1, B)
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float64)
    logp = rng.normal(-3.0, 1.0, (B, T))
    old = logp + rng.normal(0.0, 0.12, (B, T))
    adv = rng.normal(0.0, 1.0, (B, T) if per_token_adv else B)
    w = rng.uniform(0.3, 2.0, B)
    ref = logp + rng.normal(0.0, 0.3, (B, T))
    return logp, old, mask, adv, w, ref


def mlx_loss_and_grad(logp, old, mask, adv, variant, denom, w=None, ref=None, beta=0.0):
    f32 = lambda x: None if x is None else mx.array(np.asarray(x, dtype=np.float32))  # noqa: E731

    def fn(lp):
        return policy_loss(
            lp,
            f32(old),
            f32(mask),
            f32(adv),
            variant=variant,
            clip=CLIP,
            denom=denom,
            weights=f32(w),
            ref=f32(ref),
            beta=beta,
        )[0]

    value, grad = mx.value_and_grad(fn)(f32(logp))
    return value.item(), np.array(grad)


@pytest.mark.parametrize("variant", ["gspo", "gspo_token", "grpo"])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_kl", [False, True])
def test_matches_numpy_reference(variant, seed, with_kl):
    logp, old, mask, adv, w, ref = random_case(seed)
    kw = dict(w=w, ref=ref if with_kl else None, beta=0.3 if with_kl else 0.0)
    want_v, want_g = np_loss_and_grad(logp, old, mask, adv, variant, CLIP, 4.0, **kw)
    got_v, got_g = mlx_loss_and_grad(logp, old, mask, adv, variant, 4.0, **kw)
    assert got_v == pytest.approx(want_v, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_gspo_token_with_per_token_advantages_matches_numpy(seed):
    logp, old, mask, adv, w, _ = random_case(seed, per_token_adv=True)
    want_v, want_g = np_loss_and_grad(logp, old, mask, adv, "gspo_token", CLIP, 6.0, w=w)
    got_v, got_g = mlx_loss_and_grad(logp, old, mask, adv, "gspo_token", 6.0, w=w)
    assert got_v == pytest.approx(want_v, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["gspo", "grpo"])
def test_numpy_reference_gradient_is_the_derivative_of_its_value(variant):
    """Check the reference itself by central differences (its value is smooth away from the clip kinks)."""
    logp, old, mask, adv, w, ref = random_case(11)
    _, analytic = np_loss_and_grad(logp, old, mask, adv, variant, CLIP, 3.0, w=w, ref=ref, beta=0.2)
    h = 1e-6
    numeric = np.zeros_like(logp)
    for idx in zip(*np.nonzero(mask), strict=True):
        up, down = logp.copy(), logp.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (
            np_loss_and_grad(up, old, mask, adv, variant, CLIP, 3.0, w=w, ref=ref, beta=0.2)[0]
            - np_loss_and_grad(down, old, mask, adv, variant, CLIP, 3.0, w=w, ref=ref, beta=0.2)[0]
        ) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_gspo_equals_gspo_token_in_value_and_gradient_with_sequence_advantages():
    logp, old, mask, adv, w, _ = random_case(3)
    v1, g1 = mlx_loss_and_grad(logp, old, mask, adv, "gspo", 2.0, w=w)
    v2, g2 = mlx_loss_and_grad(logp, old, mask, adv, "gspo_token", 2.0, w=w)
    assert v1 == pytest.approx(v2, rel=1e-6, abs=1e-7)
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)


def test_gspo_differs_from_grpo_off_policy():
    logp, old, mask, adv, _, _ = random_case(5)
    v1, g1 = mlx_loss_and_grad(logp, old, mask, adv, "gspo", 2.0)
    v2, g2 = mlx_loss_and_grad(logp, old, mask, adv, "grpo", 2.0)
    assert abs(v1 - v2) > 1e-3
    assert np.abs(g1 - g2).max() > 1e-3


@pytest.mark.parametrize("variant", ["gspo", "gspo_token", "grpo"])
@pytest.mark.parametrize("log_s", [-0.2, -0.01, 0.01, 0.2])
@pytest.mark.parametrize("a", [-1.0, 1.0])
def test_clip_quadrants(variant, log_s, a):
    """Zero gradient exactly when (Â>0, s>1+ε_high) or (Â<0, s<1−ε_low); non-zero otherwise."""
    T = 5
    logp = np.full((1, T), -2.0)
    old = logp - log_s  # every token (and so the sequence) has ratio exp(log_s)
    _, grad = mlx_loss_and_grad(logp, old, np.ones((1, T)), np.array([a]), variant, 1.0)
    s = np.exp(log_s)
    clipped = (a > 0 and s > 1 + CLIP.high) or (a < 0 and s < 1 - CLIP.low)
    if clipped:
        assert np.all(grad == 0.0)
    else:
        assert np.all(np.abs(grad) > 1e-3)
    _, stats = policy_loss(
        mx.array(logp, dtype=mx.float32),
        mx.array(old, dtype=mx.float32),
        mx.ones((1, T)),
        mx.array([a]),
        variant=variant,
        clip=CLIP,
        denom=1.0,
    )
    assert (stats["clip_low"].item() + stats["clip_high"].item() > 0) == clipped


@pytest.mark.parametrize("variant", ["gspo", "gspo_token", "grpo"])
@pytest.mark.parametrize("a", [-1.5, 1.5])
@pytest.mark.parametrize("log_s", [95.0, 1e4])
def test_a_huge_log_ratio_gives_the_capped_value_and_no_nan(variant, a, log_s):
    """Past float32 exp's overflow (88.7) the log-ratio is capped at 10: Â > 0 is clipped as before
    ((1+ε_high)·Â, gradient 0), Â < 0 saturates at e^10·Â with gradient 0; the other sequence is untouched."""
    logp, old, mask, adv, w, _ = random_case(4)
    logp, old, mask, adv, w = logp[:2], old[:2].copy(), mask[:2], adv[:2].copy(), w[:2]
    old[0] = logp[0] - log_s  # every token of sequence 0 has log-ratio log_s
    adv[0] = a
    got_v, got_g = mlx_loss_and_grad(logp, old, mask, adv, variant, 2.0, w=w)
    assert np.isfinite(got_v) and np.all(np.isfinite(got_g))
    capped = (1 + CLIP.high) * a if a > 0 else np.exp(10.0) * a  # log s capped at 10
    rest_v, rest_g = np_loss_and_grad(logp[1:], old[1:], mask[1:], adv[1:], variant, CLIP, 2.0, w=w[1:])
    assert got_v == pytest.approx(-w[0] * capped / 2.0 + rest_v, rel=1e-6)
    assert np.all(got_g[0] == 0.0)
    np.testing.assert_allclose(got_g[1], rest_g[0], rtol=1e-4, atol=1e-6)
    _, stats = policy_loss(
        *(mx.array(np.asarray(x, dtype=np.float32)) for x in (logp, old, mask, adv)),
        variant=variant,
        clip=CLIP,
        denom=2.0,
    )
    assert stats["log_ratio"][0].item() == pytest.approx(log_s, rel=1e-5)  # reported uncapped


@pytest.mark.parametrize("variant", ["gspo", "grpo"])
def test_a_large_log_ratio_below_the_cap_is_not_bounded(variant):
    """At log s = 9.5 with Â < 0 the unclipped branch keeps its full value and gradient (s ≈ 13360)."""
    T = 4
    logp = np.full((1, T), -2.0)
    old = logp - 9.5
    want_v, want_g = np_loss_and_grad(logp, old, np.ones((1, T)), np.array([-1.0]), variant, CLIP, 1.0)
    got_v, got_g = mlx_loss_and_grad(logp, old, np.ones((1, T)), np.array([-1.0]), variant, 1.0)
    assert want_v == pytest.approx(np.exp(9.5))
    assert got_v == pytest.approx(want_v, rel=1e-5)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-5)


def test_masked_columns_have_no_effect():
    """Prompt and padding columns (mask 0) change neither the loss nor its gradient, whatever they hold."""
    logp, old, mask, adv, w, ref = random_case(7)
    noise = np.random.default_rng(0).normal(0, 50, logp.shape) * (1 - mask)
    for variant in ("gspo", "gspo_token", "grpo"):
        v1, g1 = mlx_loss_and_grad(logp, old, mask, adv, variant, 2.0, w=w, ref=ref, beta=0.1)
        v2, g2 = mlx_loss_and_grad(logp + noise, old - noise, mask, adv, variant, 2.0, w=w, ref=ref + noise, beta=0.1)
        assert v1 == v2
        np.testing.assert_array_equal(g1, g2)
        assert np.all(g2[mask == 0] == 0.0)


def test_zero_advantages_give_zero_policy_gradient():
    logp, old, mask, _, _, _ = random_case(2)
    v, g = mlx_loss_and_grad(logp, old, mask, np.zeros(len(logp)), "gspo", 1.0)
    assert v == 0.0 and np.all(g == 0.0)


def test_k3_is_nonnegative_and_zero_at_equality():
    rng = np.random.default_rng(0)
    logp = mx.array(rng.normal(-3, 2, 10_000).astype(np.float32))
    ref = mx.array(rng.normal(-3, 2, 10_000).astype(np.float32))
    assert mx.min(k3(logp, ref)).item() >= 0.0
    assert mx.max(mx.abs(k3(logp, logp))).item() == 0.0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"train\.variant"):
        policy_loss(mx.zeros((1, 2)), mx.zeros((1, 2)), mx.ones((1, 2)), mx.zeros(1), variant="ppo", clip=CLIP, denom=1)
    with pytest.raises(ValueError, match="gspo_token"):
        policy_loss(
            mx.zeros((1, 2)), mx.zeros((1, 2)), mx.ones((1, 2)), mx.zeros((1, 2)), variant="gspo", clip=CLIP, denom=1
        )
    with pytest.raises(ValueError, match="eps_low"):
        ClipRange(1.5, 0.1)
