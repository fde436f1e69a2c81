"""The judge's batched attention: rows ``[prefix | pad_i | suffix_i]`` that share one prefix.

`SharedPrefixCache` is what the model's attention layers see in a judge
forward (one per layer, in place of mlx_lm's KV caches). Left as it is, the
layers attend through mlx_lm's own attention over the prefix broadcast into
every row plus a mask over the pad columns; that is correct on any mlx_lm
model, and it is what runs on a GPU.

On the CPU, `route` sends the layers' attention to `attention` below instead.
Why: MLX's CPU `exp` is scalar (about 10 ns an element here, NumPy's
vectorised one about 0.3 ns; see varro.model.forward), and a judge round's
attention is mostly `exp` — 32 rows × 4 heads × ~600 queries × ~1,600 keys in
the benchmark's first round, 127 M scores in one half-gigabyte array. Whole
arrays in NumPy lose that gain to memory passes over the scores (tried
2026-11-23), so `attention` goes one row and one block of `block` queries at a
time: a score tile (query heads of one KV head × block × keys) stays in the
core's cache through its product, mask, max, `exp`, sum and value product.

Exact: each query block takes one softmax over the prefix keys and its own
row's suffix keys up to each query; the pad columns and pad queries are never
computed (the pad queries' outputs are zeros, and no real query reads them),
so no log-sum-exp merge of partial softmaxes is needed. The result is that of
an unpadded forward of each row's own prompt, up to float32 rounding
(tests/test_judging_local.py).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import mlx.core as mx
import numpy as np

from varro.blas import numpy_blas_single_thread
from varro.judging.base import JudgeError

QUERY_BLOCK = 64
"""Queries per score tile: with 2 query heads per KV head and ~1,600 keys, 0.8 MB of float32, inside L2."""

_ROUTED = "_varro_shared_prefix"


class SharedPrefixCache:
    """Per-layer KV cache for rows ``[prefix | pad_i | suffix_i]`` sharing one prefix.

    Quacks like mlx_lm's caches where the attention layers touch them:
    `offset` (here one RoPE position per row), `update_and_fetch`, `make_mask`
    and `state`. With `numpy` set, a routed model's attention (`route`) calls
    `attend` instead of attending to what `update_and_fetch` returns; that
    full ``[prefix | suffix]`` array (and the mask) is then never evaluated.
    """

    def __init__(self, keys: mx.array, values: mx.array, pads: Sequence[int], *, numpy: bool = False):
        self.prefix_keys, self.prefix_values = keys, values
        self.prefix_len = keys.shape[2]
        self.rows = len(pads)
        self.pad_list = [int(p) for p in pads]
        self.pads = mx.array(self.pad_list)
        self.offset = self.prefix_len - self.pads
        self.columns = self.prefix_len
        self.suffix_keys: mx.array | None = None
        self.suffix_values: mx.array | None = None
        self.numpy = numpy
        self.block = QUERY_BLOCK

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self.suffix_keys is None or self.suffix_values is None:
            self.suffix_keys, self.suffix_values = keys, values
        else:
            self.suffix_keys = mx.concatenate([self.suffix_keys, keys], axis=2)
            self.suffix_values = mx.concatenate([self.suffix_values, values], axis=2)
        self.offset = self.offset + keys.shape[2]
        self.columns += keys.shape[2]
        return self.state

    @property
    def state(self) -> tuple[mx.array, mx.array]:
        shape = (self.rows, *self.prefix_keys.shape[1:])
        keys, values = mx.broadcast_to(self.prefix_keys, shape), mx.broadcast_to(self.prefix_values, shape)
        if self.suffix_keys is None or self.suffix_values is None:
            return keys, values
        return mx.concatenate([keys, self.suffix_keys], axis=2), mx.concatenate([values, self.suffix_values], axis=2)

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None) -> mx.array:
        if window_size is not None:
            raise JudgeError("the batched judge does not support sliding-window attention")
        cols = mx.arange(self.columns + n)
        causal = mx.arange(self.columns, self.columns + n)[:, None] >= cols[None]
        start = self.prefix_len + self.pads[:, None]
        visible = (cols[None] < self.prefix_len) | (cols[None] >= start)
        return causal[None, None] & visible[:, None, None, :]

    def attend(self, queries: mx.array, scale: float) -> mx.array:
        """The attention output for `queries` (B, heads, n, dim), the rows' last n columns, via `attention`."""
        if self.suffix_keys is None or self.suffix_values is None:
            raise ValueError("attend before update_and_fetch")
        arrays = [
            a.astype(mx.float32)
            for a in (queries, self.prefix_keys[0], self.prefix_values[0], self.suffix_keys, self.suffix_values)
        ]
        mx.eval(arrays)
        q, prefix_k, prefix_v, suffix_k, suffix_v = (np.array(a, copy=False) for a in arrays)
        with numpy_blas_single_thread():  # many small products: one thread is as fast, and never stalls
            out = attention(q, prefix_k, prefix_v, suffix_k, suffix_v, self.pad_list, scale=scale, block=self.block)
        return mx.array(out).astype(queries.dtype)


def attention(
    queries: np.ndarray,
    prefix_keys: np.ndarray,
    prefix_values: np.ndarray,
    suffix_keys: np.ndarray,
    suffix_values: np.ndarray,
    pads: Sequence[int],
    *,
    scale: float,
    block: int = QUERY_BLOCK,
) -> np.ndarray:
    """Causal attention of rows ``[prefix | pad_i | suffix_i]``, float32, one query block at a time.

    queries (B, heads, n, dim) are the last n of the S suffix columns of
    suffix_keys/values (B, kv_heads, S, dim); prefix_keys/values (kv_heads, P,
    dim) are every row's. Row i's suffix starts at column pads[i]; its query
    at suffix column c sees the prefix and its suffix columns pads[i]..c. Query
    heads are grouped onto KV heads as mlx_lm groups them (head h reads KV
    head h // (heads / kv_heads)). Pad queries get zeros.
    """
    rows, heads, n, dim = queries.shape
    kv_heads, prefix_len = prefix_keys.shape[:2]
    columns = suffix_keys.shape[2]
    repeats = heads // kv_heads
    first = columns - n  # suffix column of queries[:, :, 0]
    out = np.zeros((rows, heads, n, dim), np.float32)
    above = np.triu(np.ones((block, block), np.bool_), 1)  # within a block: key after query
    for i, pad in enumerate(pads):
        keys = np.concatenate([prefix_keys, suffix_keys[i, :, pad:]], axis=1)[:, None]
        values = np.concatenate([prefix_values, suffix_values[i, :, pad:]], axis=1)[:, None]
        grouped = queries[i].reshape(kv_heads, repeats, n, dim)
        target = out[i].reshape(kv_heads, repeats, n, dim)
        # r: a query's position in its row's suffix (pads excluded); it sees keys [0, prefix_len + r]
        for r0 in range(max(first, pad) - pad, columns - pad, block):
            r1 = min(r0 + block, columns - pad)
            q = grouped[:, :, pad + r0 - first : pad + r1 - first] * np.float32(scale)
            scores = q @ keys[:, :, : prefix_len + r1].swapaxes(-1, -2)
            np.copyto(scores[..., prefix_len + r0 :], -np.inf, where=above[: r1 - r0, : r1 - r0])
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            total = scores.sum(axis=-1, keepdims=True)
            weighted = scores @ values[:, :, : prefix_len + r1]
            target[:, :, pad + r0 - first : pad + r1 - first] = weighted / total
    return out


def route(model: Any) -> bool:
    """Send `model`'s attention calls with a numpy `SharedPrefixCache` to `SharedPrefixCache.attend`.

    mlx_lm's attention layers call their module's `scaled_dot_product_attention`
    (from mlx_lm.models.base) with the layer's cache; that name is wrapped, once
    per module, by a function that hands every other call to the original
    unchanged. False when the layers do not look like that: the judge then
    stays on the masked mlx_lm path, which is correct everywhere.
    """
    layers = getattr(model, "layers", None)
    if not layers:
        return False
    modules: dict[ModuleType, Callable[..., mx.array]] = {}
    for layer in layers:
        attn = getattr(layer, "self_attn", None)
        module = sys.modules.get(type(attn).__module__) if attn is not None else None
        original = getattr(module, "scaled_dot_product_attention", None)
        if (
            module is None
            or not callable(original)
            or not {"queries", "cache", "scale"} <= set(inspect.signature(original).parameters)
        ):
            return False
        modules[module] = original
    for module, original in modules.items():
        if not getattr(original, _ROUTED, False):
            vars(module)["scaled_dot_product_attention"] = _routed(original)
    return True


def _routed(original: Callable[..., mx.array]) -> Callable[..., mx.array]:
    signature = inspect.signature(original)

    @functools.wraps(original)  # keeps the name and docstring, and sets __wrapped__ to the original
    def scaled_dot_product_attention(*args: Any, **kwargs: Any) -> mx.array:
        call = signature.bind(*args, **kwargs).arguments
        cache = call.get("cache")
        if isinstance(cache, SharedPrefixCache) and cache.numpy and call.get("sinks") is None:
            return cache.attend(call["queries"], call["scale"])
        return original(*args, **kwargs)

    setattr(scaled_dot_product_attention, _ROUTED, True)
    return scaled_dot_product_attention
