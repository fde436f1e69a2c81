"""The decoding KV cache for groups of roll-outs that share a prompt, and its NumPy attention.

A generation pass decodes G roll-outs per headline. Stored as mlx_lm's
`BatchKVCache`, every row holds (and every step reads) its own copy of its
headline's prompt keys and values, left-padded to the longest prompt: at
varro-tiny's default pass about 75% of a step's cached positions, read 8 times
over (BENCHMARKS.md, "where the decode's physical limit is"). `SharedPromptCache`
holds each prompt's keys once and each row's generated keys on their own, and
`attend` reads a prompt once per headline: its G rows' queries are one
product against it.

Exact: the softmax is taken jointly over a row's prompt and generated keys
(one max, one sum), so the result is that of one attention over the row's whole
context, up to float32 rounding; the prompt's pad columns get weight 0
(tests/test_shared_prompt.py holds it to a float64 forward). It runs under the
NumPy kernels (the CPU default), where the attention's softmax is NumPy's
anyway; MLX's kernels keep mlx_lm's batch cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import numpy as np

from varro.blas import numpy_blas_single_thread

_MASKED = np.finfo(np.float32).min


class SharedPromptCache:
    """One decoder layer's keys and values for rows decoding from shared prompts, in NumPy (float32).

    prompt_keys/values (H, kv_heads, P, dim) hold each group's prompt, right
    padded to the longest (lengths `prompt_lengths`); row b belongs to group
    `groups[b]` (non-decreasing: rows come group by group) and has its own
    generated columns, all rows the same count (`length`), up to `capacity`.
    mlx_lm's attention layers read `offset`: each row's next RoPE position.
    """

    def __init__(
        self,
        prompt_keys: np.ndarray,
        prompt_values: np.ndarray,
        prompt_lengths: Sequence[int],
        groups: Sequence[int],
        capacity: int,
    ):
        prompts, kv_heads, _, dim = prompt_keys.shape
        if len(prompt_lengths) != prompts or prompt_values.shape != prompt_keys.shape:
            raise ValueError("one prompt length per group, and keys and values of one shape")
        if list(groups) != sorted(groups) or not set(groups) <= set(range(prompts)):
            raise ValueError("rows must come group by group, each naming one of the groups")
        self.prompt_keys, self.prompt_values = prompt_keys, prompt_values
        self.prompt_lengths = np.asarray(prompt_lengths, dtype=np.int64)
        self.groups = np.asarray(groups, dtype=np.int64)
        self.generated_keys = np.empty((len(groups), kv_heads, capacity, dim), np.float32)
        self.generated_values = np.empty_like(self.generated_keys)
        self.length = 0
        self._index()

    @property
    def offset(self) -> mx.array:
        return mx.array(self.prompt_lengths[self.groups] + self.length)

    @property
    def rows(self) -> int:
        return len(self.groups)

    def _index(self) -> None:
        """Each row's slot (its group, its rank in the group) in the grid the prompt products run over."""
        starts = np.searchsorted(self.groups, self.groups, side="left")
        self.rank = np.arange(self.rows) - starts
        self.width = int(self.rank.max()) + 1 if self.rows else 0
        self.dense = self.rows == len(self.prompt_lengths) * self.width  # every group full: the grid is the rows
        columns = np.arange(self.prompt_keys.shape[2])
        self.padding = columns[None] >= self.prompt_lengths[:, None]  # (H, P): True where a prompt has no key

    def filter(self, keep: Sequence[int] | mx.array) -> None:
        """Keep only the rows `keep` (increasing), and only the prompts they still read."""
        kept = np.asarray(keep.tolist() if isinstance(keep, mx.array) else keep, dtype=np.int64)
        used, groups = np.unique(self.groups[kept], return_inverse=True)
        self.prompt_keys, self.prompt_values = self.prompt_keys[used], self.prompt_values[used]
        self.prompt_lengths = self.prompt_lengths[used]
        self.groups = groups.astype(np.int64)
        self.generated_keys, self.generated_values = self.generated_keys[kept], self.generated_values[kept]
        self._index()

    def attend(self, queries: mx.array, keys: mx.array, values: mx.array, scale: float) -> mx.array:
        """Store one step's keys and values, and return its attention output (B, heads, 1, dim).

        queries (B, heads, 1, dim) and keys/values (B, kv_heads, 1, dim) are the
        step's, RoPE applied; query head h reads KV head h // (heads / kv_heads),
        as mlx_lm groups them.
        """
        rows, heads, steps, dim = queries.shape
        if steps != 1 or rows != self.rows:
            raise ValueError(f"one decoding step for {self.rows} rows, got queries of shape {queries.shape}")
        if self.length == self.generated_keys.shape[2]:
            raise ValueError(f"the cache holds {self.length} generated positions, its capacity")
        arrays = [a.astype(mx.float32) for a in (queries, keys, values)]
        mx.eval(arrays)
        q, k, v = (np.array(a, copy=False) for a in arrays)
        self.generated_keys[:, :, self.length] = k[:, :, 0]
        self.generated_values[:, :, self.length] = v[:, :, 0]
        self.length += 1
        kv_heads = k.shape[1]
        grouped = q.reshape(rows, kv_heads, heads // kv_heads, dim) * np.float32(scale)
        with numpy_blas_single_thread():  # many small products: one thread is as fast
            out = self._attention(grouped)
        return mx.array(out.reshape(rows, heads, 1, dim))

    def _attention(self, q: np.ndarray) -> np.ndarray:
        """Softmax over [prompt | generated] per row, the prompt read once per group; q is (B, kv, repeats, dim)."""
        own_keys = self.generated_keys[:, :, : self.length]
        own_values = self.generated_values[:, :, : self.length]
        prompt_scores = self._from_grid(self._to_grid(q) @ self.prompt_keys.swapaxes(-1, -2))
        np.copyto(prompt_scores, _MASKED, where=self.padding[self.groups][:, None, None])
        own_scores = q @ own_keys.swapaxes(-1, -2)
        top = np.maximum(prompt_scores.max(axis=-1, keepdims=True), own_scores.max(axis=-1, keepdims=True))
        prompt_scores -= top
        own_scores -= top
        np.exp(prompt_scores, out=prompt_scores)
        np.exp(own_scores, out=own_scores)
        total = prompt_scores.sum(axis=-1, keepdims=True) + own_scores.sum(axis=-1, keepdims=True)
        out = self._from_grid(self._to_grid(prompt_scores) @ self.prompt_values)
        out += own_scores @ own_values
        out /= total
        return out

    def _to_grid(self, per_row: np.ndarray) -> np.ndarray:
        """(B, kv, repeats, n) → (H, kv, width · repeats, n): each group's rows stacked for one product."""
        _, kv_heads, repeats, n = per_row.shape
        prompts = len(self.prompt_lengths)
        if self.dense:
            grid = per_row.reshape(prompts, self.width, kv_heads, repeats, n)
        else:  # a finished row's slot is zeros: computed, never read
            grid = np.zeros((prompts, self.width, kv_heads, repeats, n), np.float32)
            grid[self.groups, self.rank] = per_row
        return grid.transpose(0, 2, 1, 3, 4).reshape(prompts, kv_heads, self.width * repeats, n)

    def _from_grid(self, grid: np.ndarray) -> np.ndarray:
        """The inverse of `_to_grid`, as a fresh (B, kv, repeats, n) array."""
        prompts, kv_heads, _, n = grid.shape
        slots = grid.reshape(prompts, kv_heads, self.width, -1, n).transpose(0, 2, 1, 3, 4)
        per_row: np.ndarray = (
            slots.reshape(self.rows, kv_heads, -1, n) if self.dense else slots[self.groups, self.rank]
        )  # both copy: the grid's transpose is not a view of the rows
        return per_row


def shared_prompt_caches(
    prompts: Sequence[list[tuple[np.ndarray, np.ndarray]]], groups: Sequence[int], capacity: int
) -> list[SharedPromptCache]:
    """One `SharedPromptCache` per layer from each prompt's prefilled (keys, values) per layer.

    prompts[h][layer] is (kv_heads, P_h, dim) for prompt h; row b reads prompt `groups[b]`.
    """
    layers = len(prompts[0])
    longest = max(1, max(keys.shape[1] for per_layer in prompts for keys, _ in per_layer))
    lengths = [per_layer[0][0].shape[1] for per_layer in prompts]
    caches = []
    for layer in range(layers):
        kv_heads, _, dim = prompts[0][layer][0].shape
        keys = np.zeros((len(prompts), kv_heads, longest, dim), np.float32)
        values = np.zeros_like(keys)
        for h, per_layer in enumerate(prompts):
            k, v = per_layer[layer]
            keys[h, :, : k.shape[1]], values[h, :, : v.shape[1]] = k, v
        caches.append(SharedPromptCache(keys, values, lengths, groups, capacity))
    return caches
