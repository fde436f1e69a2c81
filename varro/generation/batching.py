"""How many roll-outs decode together: a function of recorded settings and the checkpoint's shape.

Never of the machine, so a replay elsewhere batches, and so rounds, the same way.
"""

from __future__ import annotations

import mlx.nn as nn

from varro.generation.sampling import GenerationError

# "auto" batches: room for a prompt of this many tokens plus max_tokens per row, and at most this many rows.
PROMPT_ALLOWANCE = 256
MAX_AUTO_ROWS = 256


def kv_bytes_per_token(model: nn.Module) -> int:
    """Bytes one token of one row adds to the KV cache: 2 (keys, values) x layers x KV heads x head dim x dtype."""
    args = model.args
    heads = getattr(args, "num_attention_heads", None)
    kv_heads: int | None = getattr(args, "num_key_value_heads", None) or heads
    head_dim: int | None = getattr(args, "head_dim", None) or (args.hidden_size // heads if heads else None)
    if not kv_heads or not head_dim:
        raise GenerationError(f"{type(model).__name__}: its config names no attention heads; cannot size the KV cache")
    layers: int = len(model.layers) if hasattr(model, "layers") else args.num_hidden_layers
    itemsize: int = model.model.norm.weight.dtype.size  # activations' dtype, even for quantised weights
    return 2 * layers * kv_heads * head_dim * itemsize


def batch_rows(batch_size: int | str, model: nn.Module, *, group_size: int, max_tokens: int, kv_cache_mb: int) -> int:
    """Rows per generation pass: `batch_size` itself, or for "auto" as many as fit `kv_cache_mb`.

    "auto" depends only on the checkpoint's shape and dtype and on recorded
    settings, never on the machine, so a replay elsewhere batches the same way.
    It is a multiple of `group_size` (whole headlines), between one headline
    and `MAX_AUTO_ROWS` (beyond that a small model gains little per row).
    """
    if batch_size != "auto":
        if not isinstance(batch_size, int) or batch_size < 1:
            raise GenerationError(f'batch_size must be >= 1 or "auto", got {batch_size!r}')
        return batch_size
    return auto_rows(kv_bytes_per_token(model), group_size=group_size, max_tokens=max_tokens, kv_cache_mb=kv_cache_mb)


def auto_rows(kv_bytes: int, *, group_size: int, max_tokens: int, kv_cache_mb: int) -> int:
    """The "auto" rule from the KV-cache bytes of one token of one row (also what `varro.costs` plans with)."""
    per_row = kv_bytes * (PROMPT_ALLOWANCE + max_tokens)
    rows = min(MAX_AUTO_ROWS, kv_cache_mb * 2**20 // per_row)
    return max(group_size, rows // group_size * group_size)


def headlines_per_pass(batch_size: int, group_size: int) -> int:
    """How many headlines share one generation pass: the canonical batch composition."""
    return max(1, batch_size // max(1, group_size))
