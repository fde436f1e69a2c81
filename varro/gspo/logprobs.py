"""Differentiable fp32 token log-probabilities from one teacher-forced forward pass.

The backbone runs once over the right-padded batch; the output projection and
log-softmax then run over `chunk` sequence positions at a time in float32. A
micro-batch whose logits would exceed `KEEP_LOGITS_BYTES` (at Qwen3's 152k
vocabulary 0.6 GB per 1k tokens) runs each chunk under `mx.checkpoint`, so
neither pass ever holds the whole batch's logits: the backward recomputes one
chunk's at a time. A smaller one keeps them and saves that matmul.

This relies on the mlx_lm decoder layout shared by the Qwen/Llama family:
`model.model(tokens)` gives the final normed hidden states, and the logits are
`hidden @ W.T` with W the tied embedding or `lm_head.weight`.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from events.errors import PermanentError
from varro.model.forward import Kernels, training_forward


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


def _chunk_logprobs(hidden: mx.array, weight: mx.array, targets: mx.array, inv_temp: mx.array) -> mx.array:
    logits = (hidden.astype(mx.float32) @ weight.astype(mx.float32).T) * inv_temp
    picked = mx.take_along_axis(logits, mx.stop_gradient(targets)[..., None], axis=-1)[..., 0]
    return picked - mx.logsumexp(logits, axis=-1)


_checkpointed = mx.checkpoint(_chunk_logprobs)

KEEP_LOGITS_BYTES = 512 * 2**20
"""A micro-batch whose float32 logits fit in this many bytes keeps them for the backward pass.

Above it each chunk runs under `mx.checkpoint` and its logits are recomputed in
the backward pass: one more output-projection matmul, 0.5–1.0 s of a 15 s
Qwen3-0.6B step at 4 × 128 tokens (309 MB of logits, kept by default). Both
give the same bits (tested); the choice depends only on the batch's shape.
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
    head = _chunk_logprobs if keeps_logits(hidden.shape[0], hidden.shape[1], weight.shape[0]) else _checkpointed
    pieces = [
        head(hidden[:, i : i + chunk], weight, targets[:, i : i + chunk], inv_temp)
        for i in range(0, hidden.shape[1], chunk)
    ]
    return pieces[0] if len(pieces) == 1 else mx.concatenate(pieces, axis=1)
