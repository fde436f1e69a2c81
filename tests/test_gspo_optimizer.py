"""The fused AdamW is MLX's AdamW bit for bit, so recorded runs replay with it."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten

import varro  # noqa: F401  (OpenBLAS before mlx)
from varro.gspo.optimizer import IN_PLACE_FROM, FusedAdamW

SHAPES = {"embed": (3001, 257), "norm": (257,), "proj": (64, 129), "big": (1 << 20,)}


def _run(opt: optim.Optimizer, steps: int, seed: int = 0) -> tuple[dict[str, mx.array], dict[str, mx.array]]:
    rng = np.random.default_rng(seed)
    params = {name: mx.array(rng.normal(0, 0.02, shape).astype(np.float32)) for name, shape in SHAPES.items()}
    for step in range(steps):
        grads = {
            name: mx.array(rng.normal(0, 10.0 ** -(step % 4), shape).astype(np.float32))
            for name, shape in SHAPES.items()
        }
        params = opt.apply_gradients(grads, params)
        mx.eval(params, opt.state)
    return params, dict(tree_flatten(opt.state))


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("in_place_from", [IN_PLACE_FROM, 1 << 16])  # the default; and "embed", "big" in place
def test_fused_adamw_is_mlx_adamw_bit_for_bit(fuse: bool, weight_decay: float, in_place_from: int) -> None:
    stock = optim.AdamW(learning_rate=5e-4, weight_decay=weight_decay, bias_correction=True)
    fused = FusedAdamW(learning_rate=5e-4, weight_decay=weight_decay, fuse=fuse, in_place_from=in_place_from)
    want_params, want_state = _run(stock, steps=5)
    got_params, got_state = _run(fused, steps=5)
    for name in SHAPES:
        assert mx.array_equal(got_params[name], want_params[name]).item(), name
    assert want_state.keys() == got_state.keys()
    for name, value in want_state.items():
        assert mx.array_equal(got_state[name], value).item(), name


def test_fused_adamw_resumes_stock_state_exactly() -> None:
    """A checkpoint's saved optimizer state (written by either) continues identically."""
    stock = optim.AdamW(learning_rate=5e-4, weight_decay=0.01, bias_correction=True)
    params, _ = _run(stock, steps=3)
    saved = dict(tree_flatten(stock.state))  # as trainer.PriorState holds it, read from disk
    fused = FusedAdamW(learning_rate=5e-4, weight_decay=0.01)
    fused.state = tree_unflatten(list(saved.items()))
    again = optim.AdamW(learning_rate=5e-4, weight_decay=0.01, bias_correction=True)
    again.state = tree_unflatten(list(saved.items()))
    grads = {name: mx.ones(shape) * 1e-3 for name, shape in SHAPES.items()}
    a, b = again.apply_gradients(grads, params), fused.apply_gradients(grads, params)
    mx.eval(a, b)
    assert all(mx.array_equal(a[n], b[n]).item() for n in SHAPES)


def test_fused_by_default_on_the_cpu() -> None:
    assert FusedAdamW(learning_rate=1e-3).fused == (mx.default_device() == mx.cpu)


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])  # clipping, and a norm under the bound
@pytest.mark.parametrize("in_place_from", [IN_PLACE_FROM, 1 << 12])  # the default; and the 300 x 200 weight in place
def test_clip_and_update_is_clip_grad_norm_then_update_bit_for_bit(max_norm: float, in_place_from: int) -> None:
    def model() -> nn.Module:
        mx.random.seed(3)
        return nn.Sequential(nn.Linear(300, 200), nn.Linear(200, 7))

    x = mx.random.normal((16, 300), key=mx.random.key(1))

    def loss(m: nn.Module) -> mx.array:
        return (m(x) ** 2).mean()

    stock_model, fused_model = model(), model()
    stock = optim.AdamW(learning_rate=5e-4, weight_decay=0.01, bias_correction=True)
    fused = FusedAdamW(learning_rate=5e-4, weight_decay=0.01, in_place_from=in_place_from)
    for _ in range(3):
        _, grads = nn.value_and_grad(stock_model, loss)(stock_model)
        clipped, want_norm = optim.clip_grad_norm(grads, max_norm)
        stock.update(stock_model, clipped)
        _, grads = nn.value_and_grad(fused_model, loss)(fused_model)
        got_norm = fused.clip_and_update(fused_model, grads, max_norm)
        mx.eval(stock_model.parameters(), fused_model.parameters(), stock.state, fused.state)
        assert got_norm.item() == want_norm.item()
    want, got = dict(tree_flatten(stock_model.parameters())), dict(tree_flatten(fused_model.parameters()))
    assert want.keys() == got.keys()
    assert all(mx.array_equal(want[k], got[k]).item() for k in want)


@pytest.mark.parametrize("in_place", [True, False])
def test_a_large_parameter_updates_in_place(in_place: bool) -> None:
    """In place: the update of a large parameter allocates no second p, m, v (the 0.6B step's memory peak)."""
    size = 1 << 22  # 16 MB in float32
    opt = FusedAdamW(learning_rate=1e-3, weight_decay=0.01, in_place_from=size if in_place else size + 1)
    params = {"w": mx.random.normal((size,), key=mx.random.key(0))}
    grads = {"w": mx.random.normal((size,), key=mx.random.key(1))}
    params = opt.apply_gradients(grads, params)  # the first step creates m and v
    mx.eval(params, opt.state)
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    params = opt.apply_gradients(grads, params)
    mx.eval(params, opt.state)
    grown = mx.get_peak_memory() - before
    nbytes = size * 4
    if in_place:
        assert grown < nbytes // 2
    else:  # the three-output kernel: fresh p', m', v' beside p, m, v
        assert grown >= 3 * nbytes
