"""Group-normalised advantages and the EMA baseline."""

import numpy as np
import pytest

from varro.gspo.advantages import compute_advantages, ema_advantages, group_advantages


def test_group_advantages_match_the_formula():
    r = [1.0, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7, 0.0]
    for ddof in (0, 1):
        (a,) = group_advantages([r], ddof=ddof, eps=1e-4)
        x = np.array(r)
        np.testing.assert_allclose(a, (x - x.mean()) / (x.std(ddof=ddof) + 1e-4), rtol=1e-12)
        assert abs(a.sum()) < 1e-9


def test_groups_are_normalised_separately():
    a, b = group_advantages([[0.0, 1.0], [10.0, 30.0]], ddof=0, eps=1e-8)
    np.testing.assert_allclose(a, [-1, 1], rtol=1e-6)
    np.testing.assert_allclose(b, [-1, 1], rtol=1e-6)


@pytest.mark.parametrize("value", [0.0, 0.1, 1 / 3, 0.7])
def test_equal_rewards_give_exactly_zero(value):
    (a,) = group_advantages([[value] * 8], ddof=0, eps=1e-4)
    assert np.all(a == 0.0)
    (single,) = group_advantages([[value]], ddof=1, eps=1e-4)
    assert single.tolist() == [0.0]


def test_ema_baseline_centres_on_the_carried_value_and_updates():
    rewards = [[0.9, 0.8], [0.9, 0.7]]
    out = ema_advantages(rewards, previous=0.5, decay=0.9, ddof=0, eps=1e-4)
    day = np.array([0.9, 0.8, 0.9, 0.7])
    np.testing.assert_allclose(np.concatenate(out.values), (day - 0.5) / (day.std() + 1e-4))
    assert out.ema_baseline == pytest.approx(0.9 * 0.5 + 0.1 * day.mean())
    # a group of equal rewards still carries signal against the baseline
    equal = ema_advantages([[1.0, 1.0], [0.0, 0.5]], previous=0.5, decay=0.9, ddof=0, eps=1e-4)
    assert np.all(equal.values[0] > 0)


def test_ema_first_day_uses_the_day_mean_and_flat_days_are_zero():
    first = ema_advantages([[0.0, 1.0]], previous=None, decay=0.9, ddof=0, eps=1e-4)
    np.testing.assert_allclose(first.values[0], [-0.5 / (0.5 + 1e-4), 0.5 / (0.5 + 1e-4)])
    assert first.ema_baseline == pytest.approx(0.5)
    flat = ema_advantages([[0.3, 0.3]], previous=0.9, decay=0.5, ddof=0, eps=1e-4)
    assert np.all(flat.values[0] == 0.0)
    assert flat.ema_baseline == pytest.approx(0.6)


def test_compute_advantages_dispatches_and_validates():
    plain = compute_advantages([[0.0, 1.0]], ddof=0, eps=1e-4, ema_decay=None, previous_ema=0.3)
    assert plain.ema_baseline is None
    with pytest.raises(ValueError, match="ema_baseline"):
        compute_advantages([[0.0, 1.0]], ddof=0, eps=1e-4, ema_decay=1.5, previous_ema=None)
    with pytest.raises(ValueError, match="adv_eps"):
        group_advantages([[0.0, 1.0]], ddof=0, eps=0.0)
    with pytest.raises(ValueError, match="empty"):
        group_advantages([[]], ddof=0, eps=1e-4)


def peer_advantages(group, *, eps):
    """TRL's GRPOTrainer (scale_rewards="group") and verl's GRPO, as written there, in float64:
    (r − mean) / (torch.std(r) + eps), torch.std being the sample std (divisor G − 1)."""
    g = len(group)
    mean = sum(group) / g
    std = (sum((r - mean) ** 2 for r in group) / (g - 1)) ** 0.5
    return [(r - mean) / (std + eps) for r in group]


REWARD_GROUPS = [
    [1 - k / 7 for k in range(8)],  # rank-derived, G = 8
    [0.0, 1.0],
    [0.2, 0.9, 0.4],
    list(np.random.default_rng(3).uniform(0, 1, 16)),
    list(np.random.default_rng(4).normal(5.0, 2.0, 8)),
]


@pytest.mark.parametrize(("peer", "eps"), [("trl", 1e-4), ("verl", 1e-6)])
def test_sample_std_matches_the_peers_formulas(peer, eps):
    got = group_advantages(REWARD_GROUPS, ddof=1, eps=eps)
    for a, group in zip(got, REWARD_GROUPS, strict=True):
        np.testing.assert_allclose(a, peer_advantages(group, eps=eps), rtol=1e-13, atol=0)


def test_population_std_is_sqrt_g_over_g_minus_1_times_trls():
    """What ddof = 0 means against TRL: for the rank-derived G = 8 group |Â| is √(8/7) ≈ 1.069 × TRL's."""
    group = REWARD_GROUPS[0]
    (population,) = group_advantages([group], ddof=0, eps=1e-4)
    trl = np.array(peer_advantages(group, eps=1e-4))
    ratio = np.abs(population) / np.abs(trl)
    assert np.allclose(ratio, ratio[0], rtol=1e-12)  # one factor for the whole group
    assert ratio[0] == pytest.approx(np.sqrt(8 / 7), rel=2e-4)  # up to eps against a std of 0.35
    assert abs(ratio[0] - 1) > 0.06
