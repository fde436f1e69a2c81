"""The behaviour log-probs a day records: an fp32 teacher-forced pass over prompt + response.

Not the decoding pass's own values, which differ from an unbatched pass by up
to ~2e-5 through the KV-cache path's rounding (and are bf16 for a bf16
checkpoint); see the package docstring.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from varro.generation.prefill import prefilled
from varro.generation.sampling import GenerationError, token_logprobs
from varro.model.forward import Forward, Kernels, inference_forward, project
from varro.model.precision import float32_weights

# Response positions per forward call of the teacher-forced pass (see `_group_logprobs`).
_SPAN = 32


def behaviour_logprobs(
    model: nn.Module,
    prompt_ids_list: Sequence[Sequence[int]],
    response_ids_list: Sequence[Sequence[int]],
    *,
    temperature: float = 1.0,
    chunk: int = 256,
    batch_size: int = 16,
    kernels: Kernels = "auto",
) -> list[np.ndarray]:
    """fp32 ``log_softmax(logits / temperature)`` of each response token, teacher-forced.

    Consecutive sequences with the same prompt (a headline's siblings) share
    one prefill of that prompt; their responses then run in micro-batches of
    `batch_size`, right-padded (the forward pass has only a causal mask, so
    padding after the real tokens cannot leak into them). Only response
    positions reach the output head, at most `chunk` at a time, so a batch's
    full-vocabulary log-softmax is never materialised. The grouping depends
    only on the inputs, so the same inputs give bit-identical outputs.
    """
    if len(prompt_ids_list) != len(response_ids_list):
        raise GenerationError("behaviour_logprobs needs one response per prompt")
    if temperature <= 0:
        raise GenerationError(f"behaviour_logprobs needs temperature > 0, got {temperature}")
    if any(len(p) == 0 for p in prompt_ids_list):
        raise GenerationError("behaviour_logprobs: empty prompt")
    out: list[np.ndarray] = []
    with float32_weights(model):
        forward = inference_forward(model, kernels)
        start = 0
        while start < len(prompt_ids_list):
            prompt = list(prompt_ids_list[start])
            stop = start + 1
            while stop < len(prompt_ids_list) and stop - start < batch_size and list(prompt_ids_list[stop]) == prompt:
                stop += 1
            out.extend(_group_logprobs(forward, model, prompt, response_ids_list[start:stop], temperature, chunk))
            start = stop
    return out


def _group_logprobs(
    forward: Forward,
    model: nn.Module,
    prompt: list[int],
    responses: Sequence[Sequence[int]],
    temperature: float,
    chunk: int,
) -> list[np.ndarray]:
    """Log-probs of several responses to one prompt: prefill the prompt once, then the responses as a batch.

    The responses run longest first, `_SPAN` positions at a time, and a
    response leaves the batch once its positions are done. On the CPU the
    attention's softmax dominates, so this skips both the rows of finished
    (padded) responses and the causally masked keys beyond each span.
    """
    lengths = [len(r) for r in responses]
    if not any(lengths):
        return [np.zeros(0, dtype=np.float32) for _ in responses]
    order = sorted(range(len(responses)), key=lambda b: -lengths[b])
    cache = prefilled(forward, model, prompt)
    if len(prompt) > 1:
        for c in cache:
            keys, values, offset = c.state
            c.state = (
                mx.repeat(keys[..., :offset, :], len(responses), axis=0),
                mx.repeat(values[..., :offset, :], len(responses), axis=0),
                offset,
            )
    width = max(lengths)
    inputs = np.zeros((len(responses), width), dtype=np.int32)
    for row, b in enumerate(order):
        inputs[row, : lengths[b]] = [prompt[-1], *responses[b][:-1]]
    hiddens: list[mx.array] = []
    targets: list[int] = []
    slots: list[tuple[int, int, int]] = []
    for start in range(0, width, _SPAN):
        active = sum(lengths[b] > start for b in order)
        for c in cache:
            if c.keys is not None:
                c.keys, c.values = c.keys[:active], c.values[:active]
        span = min(_SPAN, width - start)
        hidden = forward(mx.array(inputs[:active, start : start + span]), cache)
        positions: list[int] = []
        for row, b in enumerate(order[:active]):
            stop = min(lengths[b], start + span)
            positions.extend(row * span + t - start for t in range(start, stop))
            targets.extend(int(t) for t in responses[b][start:stop])
            slots.append((b, start, stop))
        hiddens.append(hidden.reshape(-1, hidden.shape[-1])[mx.array(positions)])
    hidden = mx.concatenate(hiddens)
    pieces = []
    for s in range(0, len(targets), chunk):
        logits = project(model, hidden[s : s + chunk]).astype(mx.float32) / temperature
        pieces.append(token_logprobs(np.array(logits), targets[s : s + chunk]))
    flat = np.concatenate(pieces)
    out = [np.empty(n, dtype=np.float32) for n in lengths]
    at = 0
    for b, start, stop in slots:
        out[b][start:stop] = flat[at : at + stop - start]
        at += stop - start
    return out
