"""Prompts prefilled once: the caches a decoding pass and a teacher-forced pass start from.

A headline's G roll-outs share its prompt, so its keys and values are computed
once. Under the NumPy kernels (the CPU default) they are also held once
(`shared_prompt_cache`, read once per headline by `varro.model.shared_prompt`);
under MLX's kernels each row gets its own copy in mlx_lm's batch cache
(`merged_cache`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.models.cache import make_prompt_cache

from varro.generation.sampling import GenerationError
from varro.model.forward import Forward
from varro.model.shared_prompt import SharedPromptCache, shared_prompt_caches


def prefilled(forward: Forward, model: nn.Module, ids: Sequence[int]) -> list[Any]:
    """One prompt's KV cache per layer, all but its last token prefilled (that token starts the next pass)."""
    cache = make_prompt_cache(model)
    if len(ids) > 1:
        forward(mx.array([list(ids[:-1])]), cache)
        mx.eval([c.state for c in cache])
    return cache


def merged_cache(forward: Forward, model: nn.Module, prompts: Sequence[Sequence[int]], group_size: int) -> list[Any]:
    """Each prompt prefilled once, merged into one mlx_lm batch cache with G rows per prompt (each its own copy)."""
    per_row = []
    for ids in prompts:
        per_row.extend([prefilled(forward, model, ids)] * group_size)
    merged = []
    for layer, kind in enumerate(per_row[0]):
        if not hasattr(kind, "merge"):
            raise GenerationError(f"{type(kind).__name__} caches cannot be batched")
        merged.append(kind.merge([row[layer] for row in per_row]))
    return merged


def shared_prompt_cache(
    forward: Forward, model: nn.Module, prompts: Sequence[Sequence[int]], groups: Sequence[int], capacity: int
) -> list[SharedPromptCache]:
    """Each prompt prefilled once and held once per layer; row b reads prompt groups[b], with `capacity` of its own."""
    empty = [
        np.zeros((layer.self_attn.n_kv_heads, 0, layer.self_attn.k_norm.weight.shape[0]), np.float32)
        for layer in model.model.layers
    ]
    per_prompt = []
    for ids in prompts:
        if len(ids) > 1:
            cache = prefilled(forward, model, ids)
            per_prompt.append([(_prompt_part(c.keys, c.offset), _prompt_part(c.values, c.offset)) for c in cache])
        else:
            per_prompt.append([(e, e) for e in empty])
    return shared_prompt_caches(per_prompt, groups, capacity)


def _prompt_part(buffer: mx.array, length: int) -> np.ndarray:
    """A one-row KV cache buffer's first `length` positions, (kv_heads, length, dim) in float32."""
    return np.array(buffer[0, :, :length].astype(mx.float32))
