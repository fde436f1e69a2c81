"""Handing memory a finished stage freed back to the system."""

from __future__ import annotations

import gc
import sys


def return_freed_memory() -> None:
    """Hand MLX's cache of freed buffers back to the system.

    MLX keeps freed buffers for reuse, which suits one stage's repeated shapes.
    A model worker runs stages of different shapes (decoding's KV cache and
    float32 weight copies, then training's activations and gradients), so
    without this what one stage freed stays resident beside the next one's
    peak. A process that never imported MLX (a fetch worker) has none, and
    does not import it here.
    """
    gc.collect()
    mx = sys.modules.get("mlx.core")
    if mx is not None:
        mx.clear_cache()
