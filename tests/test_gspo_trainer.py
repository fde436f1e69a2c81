"""The GSPO epoch on a tiny Qwen3: on-policy identity, accumulation, fp32 master
weights, LoRA, optimizer state, determinism, and (slow) that it learns."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from gspo_fixtures import clone, make_groups, tiny_model
from mlx.utils import tree_flatten, tree_map

from varro.config import TrainConfig
from varro.gspo.advantages import group_advantages
from varro.gspo.trainer import (
    EpochData,
    OptimizerStateError,
    PriorState,
    behaviour_weights,
    make_loss_and_grad,
    minibatch_gradient,
    prepare_policy,
    sequence_logprobs,
    train_epoch,
)


def flat(tree):
    return {k: np.array(v) for k, v in tree_flatten(tree)}


def epoch_data(model, groups, cfg, old_noise=0.0, with_ref=False):
    seqs = [s for g in groups for s in g]
    old = sequence_logprobs(model, seqs, loss_on=cfg.loss_on, chunk=cfg.logprob_chunk, batch_size=4)
    if old_noise:
        rng = np.random.default_rng(0)
        old = [o + rng.normal(0, old_noise, o.shape).astype(np.float32) for o in old]
    ref = [o - 0.1 for o in old] if with_ref else None
    adv = np.concatenate(group_advantages([[s.reward for s in g] for g in groups], ddof=0, eps=1e-4))
    return EpochData(
        seqs=seqs, old=old, ref=ref, advantages=adv.astype(np.float32), weights=np.ones(len(seqs), np.float32)
    )


@pytest.mark.parametrize("variant", ["gspo", "gspo_token", "grpo"])
def test_on_policy_identity_is_reinforce_with_a_sequence_mean(variant):
    model = prepare_policy(tiny_model(), TrainConfig(), seed=0)
    groups = make_groups(2, 4, seed=1)
    cfg = TrainConfig(variant=variant, microbatch_size=3)
    data = epoch_data(model, groups, cfg)
    part = np.arange(len(data.seqs))
    _, grads, stats = minibatch_gradient(make_loss_and_grad(model, cfg), data, part, cfg)

    assert max(np.abs(st["log_ratio"]).max() for st in stats) < 1e-6
    assert sum(float(st["clip_low"]) + float(st["clip_high"]) for st in stats) == 0

    def reinforce(params):
        """−(1/G) Σ Â_i · mean_t log π(y_t), each sequence on its own, unpadded, full log-softmax."""
        model.update(params)
        total = 0.0
        for s, a in zip(data.seqs, data.advantages, strict=True):
            tokens = mx.array([list(s.prompt_ids + s.response_ids)])
            lp = nn.log_softmax(model(tokens)[0, :-1].astype(mx.float32), axis=-1)
            picked = mx.take_along_axis(lp, tokens[0, 1:, None], axis=-1)[:, 0]
            total = total + float(a) * picked[len(s.prompt_ids) - 1 :].mean()
        return -total / len(data.seqs)

    params = model.trainable_parameters()
    want = flat(mx.grad(reinforce)(params))
    model.update(params)
    got = flat(grads)
    scale = max(np.abs(v).max() for v in want.values())
    assert scale > 1e-3
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("variant", ["gspo", "grpo"])
def test_gradient_accumulation_over_microbatches_equals_one_batch(variant):
    model = prepare_policy(tiny_model(), TrainConfig(), seed=0)
    groups = make_groups(2, 5, seed=2)
    base = TrainConfig(variant=variant, eps_low=0.05, eps_high=0.05, beta=0.2, microbatch_size=10)
    data = epoch_data(model, groups, base, old_noise=0.1, with_ref=True)
    part = np.random.default_rng(0).permutation(len(data.seqs))
    loss1, g1, s1 = minibatch_gradient(make_loss_and_grad(model, base), data, part, base)
    assert sum(float(st["clip_low"]) + float(st["clip_high"]) for st in s1) > 0  # clipping is exercised
    for size in (1, 3, 4):
        cfg = TrainConfig(variant=variant, eps_low=0.05, eps_high=0.05, beta=0.2, microbatch_size=size)
        loss_k, gk, _ = minibatch_gradient(make_loss_and_grad(model, cfg), data, part, cfg)
        assert loss_k == pytest.approx(loss1, rel=1e-5, abs=1e-7)
        a, b = flat(g1), flat(gk)
        for k in a:
            np.testing.assert_allclose(b[k], a[k], atol=1e-6, rtol=1e-4)


def test_full_finetuning_keeps_fp32_master_weights_so_tiny_updates_land():
    model = tiny_model()
    model.set_dtype(mx.bfloat16)
    start = flat(tree_map(lambda v: v.astype(mx.float32), model.parameters()))
    cfg = TrainConfig(learning_rate=1e-6, minibatches=2, microbatch_size=8)
    result = train_epoch(model, make_groups(2, 4), cfg, seed=0)
    end = flat(result.model.parameters())
    w0, w1 = start["model.layers.0.mlp.down_proj.weight"], end["model.layers.0.mlp.down_proj.weight"]
    assert w1.dtype == np.float32
    assert np.mean(w1 != w0) > 0.5  # the updates landed
    # ... which a bf16 weight could not hold: rounding back erases nearly all of them
    rounded = np.array(mx.array(w1).astype(mx.bfloat16).astype(mx.float32))
    assert np.mean(rounded != w0) < 0.05


@pytest.mark.parametrize("compiled", [False, True])
def test_lora_weights_move_after_one_step_and_are_fused(compiled):
    model = tiny_model()
    before = flat(model.parameters())
    cfg = TrainConfig(
        lora=True, lora_layers=1, lora_rank=4, learning_rate=1e-3, minibatches=1, microbatch_size=16, compile=compiled
    )
    result = train_epoch(model, make_groups(2, 4), cfg, seed=0)
    after = flat(result.model.parameters())
    assert set(after) == set(before)  # fused: a plain model again, loadable by stock mlx_lm
    assert result.metrics.steps == 1 and result.optimizer_origin == "fresh" and result.optimizer_state == {}
    assert (
        np.abs(after["model.layers.1.self_attn.q_proj.weight"] - before["model.layers.1.self_attn.q_proj.weight"]).max()
        > 0
    )
    # the frozen base outside the adapted layers does not move
    np.testing.assert_array_equal(
        after["model.layers.0.self_attn.q_proj.weight"], before["model.layers.0.self_attn.q_proj.weight"]
    )
    np.testing.assert_array_equal(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"])


def test_compiled_and_eager_epochs_agree():
    """Compiling the step changes nothing but speed (a compiled step always runs MLX's kernels)."""
    groups = make_groups(2, 4)
    results = [
        train_epoch(
            tiny_model(), groups, TrainConfig(learning_rate=1e-3, microbatch_size=4, compile=c), seed=3, kernels="mlx"
        )
        for c in (False, True)
    ]
    a, b = (flat(r.model.parameters()) for r in results)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6)


def test_numpy_and_mlx_kernels_give_the_same_loss_and_gradient():
    """The NumPy-backed softmax/SwiGLU with hand-written gradients against MLX's own, on one minibatch."""
    groups = make_groups(2, 4, seed=1)
    cfg = TrainConfig(microbatch_size=3)
    results = {}
    for kernels in ("mlx", "numpy"):
        model = prepare_policy(tiny_model(), cfg, seed=0)
        data = epoch_data(model, groups, cfg, old_noise=1e-3)
        part = np.arange(len(data.seqs))
        loss, grads, _ = minibatch_gradient(make_loss_and_grad(model, cfg, kernels=kernels), data, part, cfg)
        results[kernels] = (loss, flat(grads))
    (loss_a, grads_a), (loss_b, grads_b) = results["mlx"], results["numpy"]
    assert loss_b == pytest.approx(loss_a, rel=1e-4, abs=1e-7)
    for k in grads_a:
        scale = np.abs(grads_a[k]).max()
        assert np.abs(grads_b[k] - grads_a[k]).max() <= 1e-4 * scale + 1e-9, k


def test_epoch_metrics_and_determinism():
    groups = make_groups(3, 8, seed=5)
    cfg = TrainConfig(learning_rate=1e-3, microbatch_size=5)
    r1 = train_epoch(tiny_model(), groups, cfg, seed=9)
    r2 = train_epoch(tiny_model(), groups, cfg, seed=9)
    for k, v in flat(r1.model.parameters()).items():
        np.testing.assert_array_equal(v, flat(r2.model.parameters())[k])  # same seed, same bytes
    m = r1.metrics
    seqs = [s for g in groups for s in g]
    assert (m.steps, m.sequences, m.tokens) == (4, 24, sum(s.length for s in seqs))
    assert m.avg_reward == pytest.approx(np.mean([s.reward for s in seqs]))
    assert m.avg_reward_unscaled_kind == "rank" and m.avg_reward_unscaled == pytest.approx(4.5)
    assert m.kl_ref_k3 is None and m.kl_ref_logratio is None  # β = 0
    assert m.kl_old_k3 > 0 and m.abs_log_ratio_max > 0  # later minibatches saw the policy move
    assert m.improvement > 0  # preferred roll-outs gained more likelihood than the others
    assert m.learning_rate == cfg.learning_rate and m.peak_memory_mb > 0 and m.peak_rss_mb > 0
    assert r1.step == 4 and r1.optimizer_origin == "fresh"
    other = train_epoch(tiny_model(), groups, cfg, seed=10)
    assert (
        flat(other.model.parameters())["model.norm.weight"].tolist()
        != flat(r1.model.parameters())["model.norm.weight"].tolist()
    )


def test_reference_kl_is_zero_against_itself_at_the_start():
    groups = make_groups(2, 4)
    cfg = TrainConfig(beta=0.5, minibatches=1, microbatch_size=8, learning_rate=1e-3)
    result = train_epoch(tiny_model(), groups, cfg, seed=0, reference=tiny_model())
    assert result.metrics.kl_ref_k3 == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="reference"):
        train_epoch(tiny_model(), groups, cfg, seed=0)


def test_optimizer_state_resumes_resets_or_refuses():
    groups = make_groups(2, 4)
    cfg = TrainConfig(learning_rate=1e-3, minibatches=2, microbatch_size=8)
    day1 = train_epoch(tiny_model(), groups, cfg, seed=0)
    assert day1.optimizer_state["step"].item() == 2
    prior = PriorState(optimizer=day1.optimizer_state, step=day1.step)
    day2 = train_epoch(day1.model, groups, cfg, seed=1, prior=prior)
    assert day2.optimizer_origin == "resumed" and day2.step == 4
    assert day2.optimizer_state["step"].item() == 4
    reset = train_epoch(
        clone(day1.model), groups, TrainConfig(**{**_fields(cfg), "reset_optimizer": True}), seed=1, prior=prior
    )
    assert reset.optimizer_origin == "reset" and reset.optimizer_state["step"].item() == 2
    assert not np.array_equal(
        flat(reset.model.parameters())["model.norm.weight"], flat(day2.model.parameters())["model.norm.weight"]
    )
    broken = dict(day1.optimizer_state)
    broken.pop("model.norm.weight.m")
    with pytest.raises(OptimizerStateError, match="reset_optimizer"):
        train_epoch(clone(day1.model), groups, cfg, seed=1, prior=PriorState(optimizer=broken))


def _fields(cfg):
    return {f: getattr(cfg, f) for f in cfg.__struct_fields__}


def test_ema_baseline_is_carried():
    groups = make_groups(2, 4)
    cfg = TrainConfig(ema_baseline=0.9, minibatches=1, microbatch_size=8)
    first = train_epoch(tiny_model(), groups, cfg, seed=0)
    assert first.ema_baseline == pytest.approx(0.5)
    second = train_epoch(tiny_model(), groups, cfg, seed=0, prior=PriorState(ema_baseline=0.2))
    assert second.ema_baseline == pytest.approx(0.9 * 0.2 + 0.1 * 0.5)
    assert second.metrics.mean_abs_advantage != pytest.approx(first.metrics.mean_abs_advantage)


def test_behaviour_weights_are_truncated_sequence_ratios():
    groups = make_groups(1, 3)
    seqs = groups[0]
    old = [np.asarray(s.behaviour_logprobs, np.float32) + d for s, d in zip(seqs, (0.0, 0.3, 5.0), strict=True)]
    w = behaviour_weights(seqs, old, cap=2.0)
    np.testing.assert_allclose(w, [1.0, np.exp(0.3), 2.0], rtol=1e-5)
    result = train_epoch(tiny_model(), groups, TrainConfig(pi_old="behaviour", minibatches=1), seed=0)
    assert result.metrics.steps == 1


# ------------------------------------------------------------------ learning


def sample(model, prompts, n, length, rng_key):
    """Temperature-1 samples of `length` tokens per prompt, with their log-probs (the behaviour policy)."""
    tokens = mx.array(np.repeat(np.array(prompts, np.int32), n, axis=0))
    out, lps = [], []
    for step in range(length):
        logits = model(tokens)[:, -1, :].astype(mx.float32)
        key = mx.random.split(rng_key, length)[step]
        nxt = mx.random.categorical(logits, key=key)
        lps.append(mx.take_along_axis(nn.log_softmax(logits, -1), nxt[:, None], -1)[:, 0])
        tokens = mx.concatenate([tokens, nxt[:, None].astype(tokens.dtype)], axis=1)
        out.append(nxt)
    return np.array(mx.stack(out, 1)), np.array(mx.stack(lps, 1))


@pytest.mark.slow
def test_mean_reward_of_fresh_rollouts_rises():
    """Toy verifiable reward: the share of response tokens from a fixed 'section' vocabulary."""
    from varro.gspo.batch import TrainingSequence

    target = set(range(100, 116))  # 16 of 128 tokens: ~12% by chance
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 100, 6).tolist() for _ in range(8)]
    model = tiny_model(3)
    cfg = TrainConfig(learning_rate=3e-3, minibatches=4, microbatch_size=16)  # the paper's clip range

    def mean_reward(model, key):
        toks, _ = sample(model, prompts, 8, 10, key)
        return float(np.mean([[t in target for t in row] for row in toks]))

    before = mean_reward(model, mx.random.key(1000))
    prior = PriorState()
    for epoch in range(6):
        toks, lps = sample(model, prompts, 8, 10, mx.random.key(epoch))
        groups = []
        for h, prompt in enumerate(prompts):
            group = []
            for i in range(8):
                row = toks[h * 8 + i].tolist()
                group.append(
                    TrainingSequence(
                        headline_id=f"h{h}",
                        index=i,
                        prompt_ids=tuple(prompt),
                        response_ids=tuple(row),
                        behaviour_logprobs=tuple(lps[h * 8 + i].tolist()),
                        reward=float(np.mean([t in target for t in row])),
                        raw_score=None,
                        rank=0,
                    )
                )
            groups.append(group)
        result = train_epoch(model, groups, cfg, seed=epoch, prior=prior)
        model = result.model
        prior = PriorState(optimizer=result.optimizer_state, step=result.step)
    after = mean_reward(model, mx.random.key(1001))
    assert before < 0.2 and after > before + 0.3, (before, after)


def test_trainer_logprobs_are_taken_at_the_sampling_temperature_like_the_recorded_ones():
    """μ is recorded at the sampling temperature; π_old/π_θ must be the same distribution,
    or the 'behaviour' importance weight measures temperature, not staleness."""
    from varro.generation import behaviour_logprobs
    from varro.gspo.batch import TrainingSequence
    from varro.gspo.trainer import behaviour_weights, sequence_logprobs

    model = tiny_model(seed=4)
    rng = np.random.default_rng(0)
    prompts = [tuple(int(t) for t in rng.integers(1, 128, size=6)) for _ in range(3)]
    responses = [tuple(int(t) for t in rng.integers(1, 128, size=n)) for n in (5, 9, 7)]
    mu = behaviour_logprobs(model, prompts, responses, temperature=0.8)
    seqs = [
        TrainingSequence(
            headline_id="h",
            index=i,
            prompt_ids=p,
            response_ids=r,
            behaviour_logprobs=tuple(float(x) for x in m),
            reward=0.5,
            raw_score=None,
            rank=1,
        )
        for i, (p, r, m) in enumerate(zip(prompts, responses, mu, strict=True))
    ]
    tempered = sequence_logprobs(model, seqs, loss_on="response", chunk=4, batch_size=2, temperature=0.8)
    for got, want in zip(tempered, mu, strict=True):
        np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(behaviour_weights(seqs, tempered, cap=2.0), 1.0, atol=1e-4)
    untempered = sequence_logprobs(model, seqs, loss_on="response", chunk=4, batch_size=2)
    assert not np.allclose(behaviour_weights(seqs, untempered, cap=2.0), 1.0, atol=1e-3)


def test_a_compiled_step_runs_mlx_kernels():
    from varro.gspo.trainer import epoch_kernels

    assert epoch_kernels(TrainConfig(compile=True), "numpy") == "mlx"
    assert epoch_kernels(TrainConfig(compile=False), "numpy") == "numpy"


def test_a_bf16_reference_runs_in_float32_like_the_policy_so_the_first_kl_is_exactly_zero(tiny_model_path):
    """Day 1 with β > 0: the reference is the bf16 base, the policy its float32 cast. Taken in
    bf16 the reference would differ from the policy before any update (KL about 1e-4)."""
    from mlx_lm import load

    policy, _ = load(str(tiny_model_path))
    reference, _ = load(str(tiny_model_path))
    policy.set_dtype(mx.bfloat16)
    reference.set_dtype(mx.bfloat16)
    before = dict(tree_flatten(reference.parameters()))
    # one minibatch (no update before it), one sequence per micro-batch: the loss's forward
    # passes see the same batches as the π_old and reference passes, so equal weights mean equal bits
    cfg = TrainConfig(beta=0.5, minibatches=1, microbatch_size=1)
    m = train_epoch(policy, make_groups(2, 4, seed=3), cfg, seed=0, reference=reference).metrics
    assert m.abs_log_ratio_max == 0.0  # π_θ = π_old bit for bit, so the KL below measures the reference alone
    assert (m.kl_ref_k3, m.kl_ref_logratio) == (0.0, 0.0)
    after = dict(tree_flatten(reference.parameters()))
    assert all(after[k] is v and v.dtype == mx.bfloat16 for k, v in before.items())  # left as it was


def test_a_minibatchs_gradients_are_released_before_the_next_backward(monkeypatch):
    """Two full gradient trees are never alive at once (2.4 GB more at Qwen3-0.6B's peak)."""
    import weakref

    import varro.gspo.trainer as trainer

    class Gradients(dict):  # a dict subclass: MLX's tree utilities take it, and it can be weakly referenced
        pass

    real = trainer.minibatch_gradient
    previous: list[weakref.ref] = []
    alive_at_entry: list[bool] = []

    def tracked(*args, **kwargs):
        alive_at_entry.append(any(ref() is not None for ref in previous))
        loss, grads, stats = real(*args, **kwargs)
        wrapped = Gradients(grads)
        previous.append(weakref.ref(wrapped))
        return loss, wrapped, stats

    monkeypatch.setattr(trainer, "minibatch_gradient", tracked)
    cfg = TrainConfig(learning_rate=1e-5, minibatches=3, microbatch_size=4)
    train_epoch(tiny_model(), make_groups(3, 4), cfg, seed=0)
    assert alive_at_entry == [False, False, False]
