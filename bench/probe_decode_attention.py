"""The decode step's attention products at varro-tiny's 256-row batch: what reading the KV cache costs.

    .venv/bin/python -m bench.probe_decode_attention

One decoding step's scores (queries @ keysᵀ) and weighted values, per layer, as
`varro.model.forward` runs them: 256 rows, 2 KV heads with 2 query heads each,
32 dims, 250 cached positions, on a slice of a larger cache buffer (as
mlx_lm's BatchKVCache hands them out) and on a contiguous copy; a small
projection and one tiny op for scale. Mean of 50 after a warm-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import varro  # noqa: F401  (preloads OpenBLAS before mlx)


def main() -> None:
    import mlx.core as mx

    rows, kv_heads, repeats, dims, keys, allocated = 256, 2, 2, 32, 250, 512
    q = mx.random.normal((rows, kv_heads, repeats, dims))
    cache = mx.random.normal((rows, kv_heads, allocated, dims))
    weights = mx.random.normal((rows, kv_heads, repeats, keys))
    x, w = mx.random.normal((rows, 1, 128)), mx.random.normal((384, 128))
    view = cache[..., :keys, :]
    contiguous = view * 1
    mx.eval(q, cache, weights, x, w, contiguous)
    kv_bytes = 2 * rows * kv_heads * keys * dims * 4

    def timed(name: str, run: Callable[[], mx.array], moved: int = 0) -> None:
        mx.eval(run())
        started = time.perf_counter()
        for _ in range(50):
            mx.eval(run())
        seconds = (time.perf_counter() - started) / 50
        rate = f"  {moved / seconds / 1e9:5.1f} GB/s of keys or values read" if moved else ""
        print(f"{name:44s} {seconds * 1e3:7.3f} ms{rate}")

    timed("scores, on the cache's slice", lambda: q @ view.swapaxes(-1, -2), kv_bytes // 2)
    timed("scores, on a contiguous copy", lambda: q @ contiguous.swapaxes(-1, -2), kv_bytes // 2)
    timed("weights @ values, on the cache's slice", lambda: weights @ view, kv_bytes // 2)
    timed("weights @ values, on a contiguous copy", lambda: weights @ contiguous, kv_bytes // 2)
    timed("projection 256 x 128 @ 128 x 384", lambda: x @ w.T)
    timed("one tiny op", lambda: x + 1)


if __name__ == "__main__":
    main()
