"""Differentiable fp32 token log-probabilities from one teacher-forced forward pass.

The backbone runs once over the right-padded batch; the output projection and
log-softmax then run over `chunk` sequence positions at a time in float32. A
micro-batch whose logits would exceed `KEEP_LOGITS_BYTES` (at Qwen3's 152k
vocabulary 0.6 GB per 1k tokens) runs each chunk under `mx.checkpoint`, so
neither pass ever holds the whole batch's logits: the backward recomputes one
chunk's at a time. A smaller one keeps them and saves that matmul.

Under the NumPy kernels (`varro.model.forward`, the CPU default) the
log-softmax is a custom function whose one `exp` pass runs in NumPy: MLX's CPU
`exp` is scalar (0.7–0.8 s a pass over 4 × 127 × 151,936 logits here, against
0.04 s for NumPy's), and MLX's own path makes two such passes, the
`logsumexp` forward and the softmax of its backward. The NumPy forward
writes the softmax over the logits and keeps it for the backward instead of
them (the same bytes), or, checkpointed, recomputes both; either way the same
bits. The two heads differ from each other in the last bits; both are held to
float64 in value and gradient (tests/test_gspo_logprobs.py).

This relies on the mlx_lm decoder layout shared by the Qwen/Llama family:
`model.model(tokens)` gives the final normed hidden states, and the logits are
`hidden @ W.T` with W the tied embedding or `lm_head.weight`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from events.errors import PermanentError
from varro.model.forward import Kernels, resolve, training_forward


class UnsupportedModelError(PermanentError, TypeError):
    """The model does not have the decoder layout the chunked log-probs rely on."""


def output_weight(model: nn.Module) -> mx.array:
    """The vocabulary projection matrix [V, H] (tied embedding or lm_head)."""
    args = getattr(model, "args", None)
    inner = getattr(model, "model", None)
    if inner is None or args is None:
        raise UnsupportedModelError(f"{type(model).__name__} has no `.model` backbone and `.args`")
    layer = inner.embed_tokens if getattr(args, "tie_word_embeddings", False) else getattr(model, "lm_head", None)
    if not isinstance(layer, (nn.Linear, nn.Embedding)) or isinstance(
        layer, (nn.QuantizedLinear, nn.QuantizedEmbedding)
    ):
        raise UnsupportedModelError(
            f"output projection of {type(model).__name__} is {type(layer).__name__}; "
            "training needs an unquantized Linear/Embedding"
        )
    return layer.weight


ChunkHead = Callable[[mx.array, mx.array, mx.array, mx.array], mx.array]


def _chunk_logprobs(hidden: mx.array, weight: mx.array, targets: mx.array, inv_temp: mx.array) -> mx.array:
    logits = (hidden.astype(mx.float32) @ weight.astype(mx.float32).T) * inv_temp
    picked = mx.take_along_axis(logits, mx.stop_gradient(targets)[..., None], axis=-1)[..., 0]
    return picked - mx.logsumexp(logits, axis=-1)


_checkpointed = mx.checkpoint(_chunk_logprobs)


def _numpy_log_softmax(
    hidden: mx.array, weight: mx.array, targets: mx.array, inv_temp: mx.array
) -> tuple[mx.array, mx.array]:
    """The chunk's target log-probs and its softmax, from one NumPy `exp` pass.

    The temperature scales the hidden states (B·L·H values, not B·L·V logits).
    The logits are a fresh MLX array that nothing else holds, so the softmax
    is written over them in place, through a NumPy view: no second
    vocabulary-sized buffer and no copy back into MLX.
    """
    logits = hidden.astype(mx.float32) * inv_temp @ weight.astype(mx.float32).T
    mx.eval(logits, targets)
    z = np.array(logits, copy=False)
    picked = np.take_along_axis(z, np.array(targets, copy=False)[..., None].astype(np.intp), axis=-1)
    top = z.max(axis=-1, keepdims=True)
    np.subtract(z, top, out=z)
    np.exp(z, out=z)
    total = z.sum(axis=-1, keepdims=True)
    z /= total
    return mx.array((picked - top - np.log(total))[..., 0]), logits


def _log_softmax_vjp(
    primals: tuple[mx.array, mx.array, mx.array, mx.array], cotangent: mx.array, probs: mx.array
) -> tuple[mx.array, mx.array, mx.array, mx.array]:
    """d/d(logits) of log_softmax(logits)[target] is onehot(target) − softmax(logits); chained through the projection.

    The gradient is written over the softmax, in place: `probs` is the
    buffer this head's forward made (kept or recomputed), and this VJP, run
    once per traced forward, is its only reader. So the backbone's backward
    runs beside one vocabulary-sized array, as with MLX's own head, not two.
    """
    hidden, weight, targets, inv_temp = primals
    cot = cotangent.astype(mx.float32)
    mx.eval(cot, probs, targets)
    scale = np.array(cot, copy=False)[..., None]
    grad = np.array(probs, copy=False)
    np.multiply(grad, -scale, out=grad)
    index = np.array(targets, copy=False)[..., None].astype(np.intp)
    np.put_along_axis(grad, index, np.take_along_axis(grad, index, axis=-1) + scale, axis=-1)
    d_logits = probs
    d_hidden = ((d_logits @ weight.astype(mx.float32)) * inv_temp).astype(hidden.dtype)
    rows = d_logits.reshape(-1, d_logits.shape[-1])
    scaled = (hidden.astype(mx.float32) * inv_temp).reshape(rows.shape[0], -1)
    d_weight = (rows.T @ scaled).astype(weight.dtype)
    return d_hidden, d_weight, mx.zeros_like(targets), mx.zeros_like(inv_temp)


@mx.custom_function
def _numpy_kept(hidden: mx.array, weight: mx.array, targets: mx.array, inv_temp: mx.array) -> tuple[mx.array, mx.array]:
    """The NumPy head whose second output, the softmax, stays alive for its backward pass (in place of the logits)."""
    return _numpy_log_softmax(hidden, weight, targets, inv_temp)


@_numpy_kept.vjp
def _numpy_kept_vjp(
    primals: tuple[mx.array, mx.array, mx.array, mx.array],
    cotangents: tuple[mx.array, mx.array],
    outputs: tuple[mx.array, mx.array],
) -> tuple[mx.array, mx.array, mx.array, mx.array]:
    return _log_softmax_vjp(primals, cotangents[0], outputs[1])


@mx.custom_function
def _numpy_recomputed(hidden: mx.array, weight: mx.array, targets: mx.array, inv_temp: mx.array) -> mx.array:
    """The NumPy head that keeps nothing: its backward recomputes the chunk's logits and softmax."""
    return _numpy_log_softmax(hidden, weight, targets, inv_temp)[0]


@_numpy_recomputed.vjp
def _numpy_recomputed_vjp(
    primals: tuple[mx.array, mx.array, mx.array, mx.array], cotangent: mx.array, output: mx.array
) -> tuple[mx.array, mx.array, mx.array, mx.array]:
    return _log_softmax_vjp(primals, cotangent, _numpy_log_softmax(*primals)[1])


def _numpy_kept_head(hidden: mx.array, weight: mx.array, targets: mx.array, inv_temp: mx.array) -> mx.array:
    # mx.custom_function's __call__ is typed to return object; this one returns two arrays
    outputs = cast("tuple[mx.array, mx.array]", _numpy_kept(hidden, weight, targets, inv_temp))
    return outputs[0]


def chunk_head(kernels: str, kept: bool) -> ChunkHead:
    """The output head for one chunk: NumPy's or MLX's log-softmax, logits kept or recomputed in the backward."""
    if kernels == "numpy":
        return _numpy_kept_head if kept else cast(ChunkHead, _numpy_recomputed)
    return _chunk_logprobs if kept else _checkpointed


KEEP_LOGITS_BYTES = 512 * 2**20
"""A micro-batch whose float32 logits fit in this many bytes keeps them (or, in NumPy, their softmax) for the backward.

Above it each chunk's logits are recomputed in the backward pass (under
`mx.checkpoint`, or by the NumPy head's own VJP): one more output-projection
matmul, 0.5–1.0 s of a 15 s Qwen3-0.6B step at 4 × 128 tokens (309 MB of
logits, kept by default). Both give the same bits (tested); the choice depends
only on the batch's shape.
"""


def keeps_logits(rows: int, positions: int, vocab: int) -> bool:
    """Whether a micro-batch of `rows` × `positions` predicted tokens keeps its logits (`KEEP_LOGITS_BYTES`)."""
    return rows * positions * vocab * 4 <= KEEP_LOGITS_BYTES


def token_logprobs(
    model: nn.Module,
    tokens: mx.array,
    *,
    chunk: int,
    start: int = 0,
    temperature: float = 1.0,
    kernels: Kernels = "auto",
) -> mx.array:
    """log π(tokens[:, j+1] | tokens[:, :j+1]) for j in [start, L−1), float32 [B, L−1−start].

    π is softmax(logits / temperature): the trainer passes the roll-outs' sampling
    temperature, so π_θ, π_old, the reference and the recorded behaviour log-probs
    are all the same (tempered, untruncated) distribution and their ratios compare
    like with like. A temperature of 0 (greedy sampling) is taken as 1.
    `kernels` picks the backbone's softmax/SwiGLU (`varro.model.forward`); the
    same choice must serve π_θ, π_old and the reference within one epoch.
    """
    if chunk < 1:
        raise ValueError(f"train.logprob_chunk must be >= 1, got {chunk}")
    if tokens.ndim != 2 or tokens.shape[1] < 2 + start:
        raise ValueError(f"need a [batch, length >= {start + 2}] token array, got shape {tokens.shape}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    inv_temp = mx.array(1.0 / temperature if temperature > 0 else 1.0, dtype=mx.float32)
    weight = output_weight(model)
    hidden = training_forward(model, kernels)(tokens)[:, start:-1]
    targets = tokens[:, start + 1 :]
    head = chunk_head(resolve(model, kernels), keeps_logits(hidden.shape[0], hidden.shape[1], weight.shape[0]))
    pieces = [
        head(hidden[:, i : i + chunk], weight, targets[:, i : i + chunk], inv_temp)
        for i in range(0, hidden.shape[1], chunk)
    ]
    return pieces[0] if len(pieces) == 1 else mx.concatenate(pieces, axis=1)
