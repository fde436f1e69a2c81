"""The model's forward pass, with the CPU's exp-bound steps in NumPy.

MLX's CPU backend evaluates `exp` one element at a time (about 12 ns an element
in the Linux wheel, against under 1 ns for NumPy's vectorised `exp`; see
BENCHMARKS.md). In decoding, teacher-forced and training passes of a small
model the attention softmax and the SwiGLU's sigmoid are then most of the time
(half of a training step). The
"numpy" kernels run the checkpoint's own mlx_lm modules (projections, norms,
rotary embedding, KV cache, output head) unchanged and hand only those two
steps to NumPy, in fp32: `inference_forward` for sampling and the
teacher-forced pass, `training_forward` for training, where the two steps are
MLX custom functions with hand-written vector-Jacobian products. (The local
judge has its own NumPy attention, varro.judging.shared_prefix: over its long
shared prefix whole-array passes like these lose to memory traffic, so it goes
one cache-sized block of queries at a time.)

The two paths are different floating-point programs for the same function:
both are as close to a float64 forward (about 5e-5 on logits of about 20,
tested), but not bit-identical to each other, so the choice is recorded with
each run (`model.kernels`). Each path is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, cast

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.models.base import create_attention_mask

from events.errors import PermanentError
from varro.model.shared_prompt import SharedPromptCache

if TYPE_CHECKING:
    from mlx_lm.models.qwen3 import MLP, Attention

Kernels = Literal["auto", "mlx", "numpy"]
Cache = list[Any]
"""One mlx_lm KV cache per decoder layer (mlx_lm's cache classes share no public base)."""
Forward = Callable[[mx.array, Cache], mx.array]
Mask = mx.array | str | None
"""An attention mask as mlx_lm makes them: None, "causal", or an array over (B, 1, L, S)."""

# Architectures whose decoder layers this module knows how to run: Qwen3's
# attention (q/k RMS norms, rotary, grouped KV heads) and SwiGLU MLP.
SUPPORTED = frozenset({"qwen3"})

_MASKED = np.finfo(np.float32).min  # as MLX's attention: a fully masked row stays finite


class ForwardError(PermanentError, ValueError):
    """An unknown kernel choice, or the numpy kernels asked for a model they cannot run."""


def model_type(model: nn.Module) -> str:
    args = getattr(model, "args", None)
    return str(getattr(model, "model_type", None) or getattr(args, "model_type", ""))


def resolve(model: nn.Module, kernels: Kernels = "auto") -> Literal["mlx", "numpy"]:
    """Which kernels a forward pass of `model` uses: "auto" means NumPy's on the CPU for supported models."""
    return resolve_type(model_type(model), kernels)


def resolve_type(name: str, kernels: Kernels | str = "auto") -> Literal["mlx", "numpy"]:
    """`resolve` for a model type named in a config.json, so a plan can be made without loading the weights."""
    if kernels == "mlx":
        return "mlx"
    supported = name in SUPPORTED
    if kernels == "numpy":
        if not supported:
            raise ForwardError(f"model.kernels = 'numpy' supports model types {sorted(SUPPORTED)}, not {name!r}")
        return "numpy"
    if kernels != "auto":
        raise ForwardError(f"kernels must be 'auto', 'mlx' or 'numpy', got {kernels!r}")
    return "numpy" if supported and mx.default_device() == mx.cpu else "mlx"


def inference_forward(model: nn.Module, kernels: Kernels = "auto") -> Forward:
    """``forward(inputs, cache) -> final hidden states``, as ``model.model(inputs, cache=cache)`` computes them."""
    if resolve(model, kernels) == "mlx":
        return lambda inputs, cache: model.model(inputs, cache=cache)
    return lambda inputs, cache: hidden_states(model, inputs, cache)


def project(model: nn.Module, hidden: mx.array) -> mx.array:
    """The model's output head applied to final hidden states (tied embeddings or a separate head)."""
    if getattr(model, "lm_head", None) is not None and not getattr(model.args, "tie_word_embeddings", False):
        head: mx.array = model.lm_head(hidden)
        return head
    tied: mx.array = model.model.embed_tokens.as_linear(hidden)
    return tied


def hidden_states(model: nn.Module, inputs: mx.array, cache: Cache) -> mx.array:
    """The decoder stack of a Qwen3 model with the softmax and SwiGLU in NumPy (see the module doc)."""
    inner = model.model
    h = inner.embed_tokens(inputs)
    mask = None if isinstance(cache[0], SharedPromptCache) else create_attention_mask(h, cache[0])
    for layer, layer_cache in zip(inner.layers, cache, strict=True):
        h = h + _attention(layer.self_attn, layer.input_layernorm(h), mask, layer_cache)
        h = h + _swiglu_mlp(layer.mlp, layer.post_attention_layernorm(h))
    out: mx.array = inner.norm(h)
    return out


def _heads(attn: Attention, x: mx.array, offset: int = 0) -> tuple[mx.array, mx.array, mx.array]:
    """mlx_lm's Qwen3 queries, keys and values as (B, heads, L, dim), rotary applied from position `offset`."""
    B, L, _ = x.shape
    queries, keys, values = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    queries = attn.rope(attn.q_norm(queries.reshape(B, L, attn.n_heads, -1)).transpose(0, 2, 1, 3), offset=offset)
    keys = attn.rope(attn.k_norm(keys.reshape(B, L, attn.n_kv_heads, -1)).transpose(0, 2, 1, 3), offset=offset)
    return queries, keys, values.reshape(B, L, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)


def _merge_heads(attn: Attention, out: mx.array) -> mx.array:
    """(B, heads, L, dim) attention output through the output projection."""
    B, _, L, _ = out.shape
    return attn.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


def _attention(attn: Attention, x: mx.array, mask: Mask, cache: Any) -> mx.array:
    """mlx_lm's Qwen3 attention, its softmax taken in NumPy; the score and value products stay in MLX.

    Over a `SharedPromptCache` (decoding groups of roll-outs) the whole attention is the cache's, in NumPy.
    """
    B, L, _ = x.shape
    queries, keys, values = _heads(attn, x, cache.offset)
    if isinstance(cache, SharedPromptCache):  # a decoding step over prompts shared by groups of rows
        return _merge_heads(attn, cache.attend(queries, keys, values, attn.scale).astype(x.dtype))
    keys, values = cache.update_and_fetch(keys, values)
    kv_heads, length, dim = keys.shape[1:]
    repeats = attn.n_heads // kv_heads
    # Grouped heads: the `repeats` query heads that share a KV head become rows of one product.
    grouped = (queries * attn.scale).reshape(B, kv_heads, repeats * L, dim)
    scores = (grouped @ keys.swapaxes(-1, -2)).astype(mx.float32)
    mx.eval(scores, mask) if isinstance(mask, mx.array) else mx.eval(scores)
    probs = softmax(_to_numpy(scores).reshape(B, kv_heads, repeats, L, length), _mask_array(mask, L, length))
    weights = mx.array(probs.reshape(B, kv_heads, repeats * L, length)).astype(values.dtype)
    return _merge_heads(attn, (weights @ values).reshape(B, attn.n_heads, L, dim))


def _mask_array(mask: Mask, queries: int, keys: int) -> np.ndarray | None:
    """mlx_lm's mask (None, "causal", or an array over (B, 1, L, S)) as an array broadcasting over grouped heads."""
    if mask is None:
        return None
    if isinstance(mask, str):
        if mask != "causal":
            raise ForwardError(f"unsupported attention mask {mask!r}")
        return (np.arange(keys - queries, keys)[:, None] >= np.arange(keys)[None])[None, None, None]
    array = _to_numpy(mask)
    return array.reshape(array.shape[0], 1, 1, *array.shape[-2:]) if array.ndim == 4 else array


def softmax(scores: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """fp32 softmax over the last axis; `mask` is boolean (False = masked) or additive."""
    if mask is not None:
        scores = np.where(mask, scores, _MASKED) if mask.dtype == np.bool_ else scores + mask
    else:
        scores = scores.copy()
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def _swiglu_mlp(mlp: MLP, x: mx.array) -> mx.array:
    """``down(silu(gate(x)) * up(x))`` with the SiLU in NumPy (`_swiglu_fn`, differentiable)."""
    # mx.custom_function's __call__ is typed to return object; these return one array
    activated = cast("mx.array", _swiglu_fn(mlp.gate_proj(x), mlp.up_proj(x)))
    return mlp.down_proj(activated)


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """``gate * sigmoid(gate) * up`` in fp32; a very negative gate gives exactly 0, as the limit."""
    with np.errstate(over="ignore"):
        out: np.ndarray = gate / (1.0 + np.exp(-gate)) * up
    return out


def _to_numpy(array: mx.array) -> np.ndarray:
    """A NumPy view of an MLX array, evaluated here unless it already is; no copy."""
    mx.eval(array)
    return np.array(array, copy=False)


# --------------------------------------------------------------------- training
#
# The same two steps, differentiable: MLX custom functions whose forward runs in
# NumPy and whose vector-Jacobian products are written out (the softmax's needs
# only its output; the SwiGLU's recomputes the sigmoid in NumPy). Everything
# else, and the gradient of everything else, is mlx_lm's and MLX's.


@mx.custom_function
def _softmax_fn(scores: mx.array) -> mx.array:
    probs = softmax(_to_numpy(scores.astype(mx.float32)), None)
    return mx.array(probs).astype(scores.dtype)


@_softmax_fn.vjp
def _softmax_vjp(primals: tuple[mx.array], cotangent: mx.array, output: mx.array) -> tuple[mx.array]:
    return (output * (cotangent - (cotangent * output).sum(axis=-1, keepdims=True)),)


@mx.custom_function
def _swiglu_fn(gate: mx.array, up: mx.array) -> mx.array:
    gate32, up32 = gate.astype(mx.float32), up.astype(mx.float32)
    mx.eval(gate32, up32)  # one hand-off to NumPy for both
    return mx.array(swiglu(_to_numpy(gate32), _to_numpy(up32))).astype(gate.dtype)


@_swiglu_fn.vjp
def _swiglu_vjp(primals: tuple[mx.array, mx.array], cotangent: mx.array, output: mx.array) -> tuple[mx.array, mx.array]:
    gate, up = primals
    sig = mx.array(_sigmoid(_to_numpy(gate.astype(mx.float32)))).astype(gate.dtype)
    silu = gate * sig
    return cotangent * up * (sig + silu * (1 - sig)), cotangent * silu


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def training_forward(model: nn.Module, kernels: Kernels = "auto") -> Callable[[mx.array], mx.array]:
    """``forward(tokens) -> final hidden states`` of a full causal pass, differentiable, as ``model.model(tokens)``.

    Not for `mx.compile` (the NumPy steps evaluate their inputs); the trainer
    uses MLX's kernels when it compiles.
    """
    if resolve(model, kernels) == "mlx":
        return lambda tokens: model.model(tokens)
    return lambda tokens: training_hidden_states(model, tokens)


def training_hidden_states(model: nn.Module, tokens: mx.array) -> mx.array:
    """The decoder stack over whole right-padded sequences (causal mask only) with the NumPy-backed steps."""
    inner = model.model
    h = inner.embed_tokens(tokens)
    length = tokens.shape[1]
    causal = mx.arange(length)[:, None] >= mx.arange(length)[None]
    for layer in inner.layers:
        h = h + _causal_attention(layer.self_attn, layer.input_layernorm(h), causal)
        h = h + _swiglu_mlp(layer.mlp, layer.post_attention_layernorm(h))
    out: mx.array = inner.norm(h)
    return out


def _causal_attention(attn: Attention, x: mx.array, causal: mx.array) -> mx.array:
    B, L, _ = x.shape
    queries, keys, values = _heads(attn, x)
    kv_heads, dim = keys.shape[1], keys.shape[3]
    repeats = attn.n_heads // kv_heads
    grouped = (queries * attn.scale).reshape(B, kv_heads, repeats, L, dim)
    scores = mx.where(causal, grouped @ keys[:, :, None].swapaxes(-1, -2), float(_MASKED))
    probs = cast("mx.array", _softmax_fn(scores))  # a custom_function: typed to return object
    return _merge_heads(attn, (probs @ values[:, :, None]).reshape(B, attn.n_heads, L, dim))
