"""The decoding loop: all roll-outs of a generation pass decode together.

One forward pass of the model per step for the whole batch; each headline's
prompt is prefilled once for all G siblings. Under the NumPy kernels (the CPU
default) its keys and values are then held, and read, once per headline
(`varro.model.shared_prompt`): a step's attention reads about a third of the
bytes of one copy per row, which is what bounds a step at varro-tiny's
256-row pass. Under MLX's kernels the prompt's cache is copied into mlx_lm's
`BatchKVCache`, one copy per row. Finished rows are dropped in bulk
(`_COMPACT`). Passes of ``batch_size // group_size`` headlines are the
canonical batch composition (`sample_in_passes`), see the package docstring.

Under the NumPy kernels (the CPU default) a half-precision checkpoint decodes
on a float32 copy of its weights (`varro.model.precision`), as its
teacher-forced pass already does: MLX's CPU backend has no fast bf16/fp16
matrix product (a 16-row product at Qwen3-0.6B's MLP shape ran at 6.7 GFLOP/s
in bf16 against 139–165 in float32 here, and a bf16 0.6B decode 12× slower
than on the copy; BENCHMARKS.md). The KV cache is
then float32 too, twice the bytes the "auto" batch rule counted for the
checkpoint's dtype, which stays the rule so the batch composition does not
depend on the machine. The tokens are those of the float32 model the
checkpoint denotes (tested); under the MLX kernels it decodes in its own dtype.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from events.schema import SamplerSpec
from varro.generation.batching import headlines_per_pass
from varro.generation.prefill import merged_cache, shared_prompt_cache
from varro.generation.sampling import (
    GenerationError,
    candidate_count,
    device_candidates,
    draw,
    host_candidates,
    rollout_uniforms,
    validate_sampler,
)
from varro.model.cache import LoadedModel
from varro.model.forward import Kernels, inference_forward, project, resolve
from varro.model.precision import float32_weights

# Finished rows stay in the batch (their draws are ignored) until at most this
# fraction of it is still running; dropping them copies every layer's cache.
_COMPACT = 0.75


@dataclass(frozen=True)
class SampledResponse:
    """One roll-out as the decoding pass produced it."""

    headline_id: str
    index: int
    seed: int
    response_ids: list[int]
    truncated: bool
    logprobs: list[float]  # log_softmax(logits / T)[token] of the decoding pass (T = 1 when greedy), untruncated


def sample_responses(
    loaded: LoadedModel,
    prompts: Sequence[tuple[str, list[int]]],
    *,
    group_size: int,
    sampler: SamplerSpec,
    seeds: dict[tuple[str, int], int],
    eos_token_ids: Iterable[int],
    kernels: Kernels = "auto",
) -> list[SampledResponse]:
    """Sample `group_size` responses per prompt, all of them decoding as one batch.

    Each step is one forward pass for the batch, each row's top-k candidates
    taken where the logits are (`host_candidates` on the CPU,
    `device_candidates` on a GPU), and one vectorised draw from them, as in
    `sample_tokens`.
    """
    validate_sampler(sampler)
    if group_size < 1:
        raise GenerationError(f"group_size must be >= 1, got {group_size}")
    eos = {int(t) for t in eos_token_ids}
    if not eos:
        raise GenerationError("no EOS token ids: generation could never stop early")
    headline_ids = [h for h, _ in prompts]
    if len(set(headline_ids)) != len(headline_ids):
        raise GenerationError("each headline may appear only once in a generation call")
    order: list[tuple[str, int, int]] = []
    for headline_id, ids in prompts:
        if not ids:
            raise GenerationError(f"headline {headline_id}: empty prompt")
        for index in range(group_size):
            try:
                order.append((headline_id, index, seeds[(headline_id, index)]))
            except KeyError:
                raise GenerationError(f"no seed for roll-out {index} of headline {headline_id}") from None
    model = loaded.model
    with float32_weights(model) if resolve(model, kernels) == "numpy" else nullcontext(model):
        return _decode(model, prompts, order, group_size, sampler, eos, kernels)


def _decode(
    model: nn.Module,
    prompts: Sequence[tuple[str, list[int]]],
    order: list[tuple[str, int, int]],
    group_size: int,
    sampler: SamplerSpec,
    eos: set[int],
    kernels: Kernels,
) -> list[SampledResponse]:
    """The decoding loop of `sample_responses` over validated inputs, in the weights' own dtype."""
    forward = inference_forward(model, kernels)
    prompt_ids = [ids for _, ids in prompts]
    if resolve(model, kernels) == "numpy":
        groups = [h for h in range(len(prompts)) for _ in range(group_size)]
        cache: list[Any] = shared_prompt_cache(forward, model, prompt_ids, groups, sampler.max_tokens)
    else:
        cache = merged_cache(forward, model, prompt_ids, group_size)
    uniforms = np.stack([rollout_uniforms(seed, sampler) for _, _, seed in order])
    drawn = np.array([ids[-1] for _, ids in prompts for _ in range(group_size)])
    temperature = mx.array(sampler.temperature or 1.0, dtype=mx.float32)
    on_host = mx.default_device() == mx.cpu

    tokens: list[list[int]] = [[] for _ in order]
    logprobs: list[list[float]] = [[] for _ in order]
    stopped = [False] * len(order)
    rows = list(range(len(order)))  # batch position -> roll-out
    for t in range(sampler.max_tokens):
        hidden = forward(mx.array(drawn)[:, None], cache)[:, -1, :]
        values = project(model, hidden).astype(mx.float32) / temperature
        k = candidate_count(sampler, values.shape[-1])
        candidates = host_candidates(np.array(values), k) if on_host else device_candidates(values, k)
        drawn, picked = draw(candidates, uniforms[:, t], sampler)
        for row, token, lp in zip(rows, drawn.tolist(), picked.tolist(), strict=True):
            if not stopped[row]:
                tokens[row].append(token)
                logprobs[row].append(lp)
                stopped[row] = token in eos
        running = [b for b, row in enumerate(rows) if not stopped[row]]
        if not running:
            break
        if len(running) <= _COMPACT * len(rows) and t + 1 < sampler.max_tokens:
            keep = mx.array(running)
            for layer in cache:
                layer.filter(keep)
            uniforms, drawn = uniforms[running], drawn[running]
            rows = [rows[b] for b in running]

    return [
        SampledResponse(
            headline_id=headline_id,
            index=index,
            seed=seed,
            response_ids=tokens[r],
            truncated=not stopped[r],
            logprobs=logprobs[r],
        )
        for r, (headline_id, index, seed) in enumerate(order)
    ]


def sample_in_passes(
    loaded: LoadedModel,
    prompts: Sequence[tuple[str, list[int]]],
    *,
    group_size: int,
    sampler: SamplerSpec,
    seeds: dict[tuple[str, int], int],
    batch_size: int,
    eos_token_ids: Iterable[int],
    kernels: Kernels = "auto",
) -> list[SampledResponse]:
    """`sample_responses` over consecutive passes of ``batch_size // group_size`` headlines (the
    canonical batch composition), without the teacher-forced log-prob pass: what evaluation needs."""
    headline_ids = [h for h, _ in prompts]
    if len(set(headline_ids)) != len(headline_ids):
        raise GenerationError("each headline may appear only once in a generation call")
    if batch_size < 1:
        raise GenerationError(f"batch_size must be >= 1, got {batch_size}")
    per_pass = headlines_per_pass(batch_size, group_size)
    eos = list(eos_token_ids)
    sampled = []
    for start in range(0, len(prompts), per_pass):
        chunk = prompts[start : start + per_pass]
        sampled.extend(
            sample_responses(
                loaded, chunk, group_size=group_size, sampler=sampler, seeds=seeds, eos_token_ids=eos, kernels=kernels
            )
        )
    return sampled


def response_text(tokenizer: Any, response: SampledResponse, eos_token_ids: Iterable[int]) -> str:
    """The answer's text: its tokens decoded without the stop token."""
    eos = {int(t) for t in eos_token_ids}
    ids = response.response_ids
    text: str = tokenizer.decode(ids[:-1] if ids and ids[-1] in eos else ids)
    return text
