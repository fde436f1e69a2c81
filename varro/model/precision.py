"""Running a model's weights in float32 for one pass, without changing the model.

Log-probabilities that are compared with each other (behaviour μ, π_old, π_θ,
the KL reference) must come from the same arithmetic. The policy trains on
float32 master weights, so every other pass whose log-probs meet it in a ratio
runs in float32 too: bf16 -> float32 is exact, so the result is the float32
model the bf16 checkpoint denotes, and a bf16 reference equal to the policy's
start gives the same log-probs as the policy before its first update, bit for
bit on the same batches (a KL of exactly 0), rather than bf16 arithmetic's
(a KL of about 1e-4 on a tiny model).

The original arrays are kept and put back afterwards, so a model shared with
others (the model cache's, a generating checkpoint) is unchanged; only the
pass itself holds the float32 copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map


@contextmanager
def float32_weights(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block `model` computes in float32; its exact weights are restored on leaving."""
    params = model.parameters()
    leaves = cast("list[tuple[str, mx.array]]", tree_flatten(params))  # no destination: a list
    if all(p.dtype == mx.float32 for _, p in leaves):
        yield model
        return
    model.update(tree_map(lambda p: p.astype(mx.float32) if mx.issubdtype(p.dtype, mx.floating) else p, params))
    try:
        yield model
    finally:
        model.update(params)
