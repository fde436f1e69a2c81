"""Batched, reproducible roll-outs with the behaviour policy's exact log-probs.

All roll-outs of a generation pass decode together, one forward pass of the
model per step over mlx_lm's `BatchKVCache`. Each headline's prompt is
prefilled once and its KV cache merged into the batch for all G siblings, so
the prefill is shared rather than repeated G times. The loop is ours rather
than `BatchGenerator`'s because that engine samples row by row as soon as rows
carry their own random streams, returns one log-prob array per row per step,
and copies the whole batch cache every time a single row finishes; here a
step is one vectorised draw for the batch, and finished rows are dropped in
bulk (`_COMPACT`). The forward pass is mlx_lm's model run by
`varro.model.forward`, which on the CPU hands the softmax and SwiGLU to NumPy
(`model.kernels`). Each step's top-k candidates and log-sum-exp are taken
where the logits are (NumPy on the CPU, MLX on a GPU, so only (B, k + 1)
values cross to the host there), and the draw from them in NumPy.

Reproducibility: roll-out r draws its step-t token with the uniform
``uniform(key(seed_r), (max_tokens,))[t]``, inverted against the CDF of the
candidates that survive temperature, top-k and top-p, for every row of the
batch at once (`sample_tokens`). A roll-out's tokens are therefore a function
of its seed and of the logits it sees, never of the global RNG or of which
other roll-outs share the batch. The logits themselves are *not* bitwise
independent of the batch on the CPU: the amount of left padding (set by the
longest prompt in the batch, and shifted as rows are dropped) changes the
rounding of the attention (differences of about 1e-6 in the log-probs).
Such a difference flips a draw only when the uniform lands that close to a CDF
step, so in practice tokens agree (64 of 64 roll-outs of 160 tokens matched
between headlines generated alone and together), but that is not a guarantee.
`generate_rollouts` therefore fixes the batch composition canonically:
headlines run in consecutive passes of ``batch_size // group_size``, so a
roll-out depends only on its seed, its pass, the kernels and the checkpoint,
and a job split by passes (see jobs.generate) reproduces the unsplit job bit
for bit.

The recorded log-probs are not the decoding pass's: `sequence_logprobs`
recomputes them with an fp32 teacher-forced pass of the same checkpoint over
prompt + response, as ``log_softmax(logits / temperature)``. That pass agrees
with an unbatched, uncached fp32 pass of mlx_lm's model to about 1e-5 (short
prompts are the worst case) and is bit-identical from call to call, whereas
the decoding pass's own values (kept in `SampledResponse.logprobs`) differ from
it by up to ~2e-5 through the KV-cache path's rounding, and are bf16 for a bf16
checkpoint.
Top-k / top-p truncation is *not* applied to them: the trainer's π_θ is the
same untruncated, temperature-scaled distribution, so the importance ratio
π_θ / π_old compares like with like (a truncated π_old would put -inf where π_θ
has mass). Temperature 0 (greedy) records the untempered (T = 1) log-probs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import make_prompt_cache

from events.errors import PermanentError
from events.schema import SamplerSpec
from varro.model.cache import LoadedModel
from varro.model.forward import Forward, Kernels, inference_forward, project
from varro.model.precision import float32_weights
from varro.rollouts import RolloutRecord
from varro.structure import structure_score

# Finished rows stay in the batch (their draws are ignored) until at most this
# fraction of it is still running; dropping them copies every layer's cache.
_COMPACT = 0.75

# Response positions per forward call of the teacher-forced pass (see `_group_logprobs`).
_SPAN = 32


class GenerationError(PermanentError, ValueError):
    """Bad generation input: an empty prompt, a missing seed, an invalid sampler setting."""


@dataclass(frozen=True)
class SampledResponse:
    """One roll-out as the decoding pass produced it."""

    headline_id: str
    index: int
    seed: int
    response_ids: list[int]
    truncated: bool
    logprobs: list[float]  # log_softmax(logits / T)[token] of the decoding pass (T = 1 when greedy), untruncated


def validate_sampler(sampler: SamplerSpec) -> None:
    if sampler.temperature < 0:
        raise GenerationError(f"sampler {sampler.name!r}: temperature must be >= 0, got {sampler.temperature}")
    if not 0 < sampler.top_p <= 1:
        raise GenerationError(f"sampler {sampler.name!r}: top_p must be in (0, 1], got {sampler.top_p}")
    if sampler.top_k < 0:
        raise GenerationError(f"sampler {sampler.name!r}: top_k must be >= 0, got {sampler.top_k}")
    if sampler.max_tokens < 1:
        raise GenerationError(f"sampler {sampler.name!r}: max_tokens must be >= 1, got {sampler.max_tokens}")


@dataclass(frozen=True)
class Candidates:
    """Each row's top-k tokens, ascending by id, with their tempered logits and the row's log-sum-exp."""

    ids: np.ndarray  # (B, k) int
    values: np.ndarray  # (B, k) fp32, logits / T
    lse: np.ndarray  # (B,) fp32, log-sum-exp of the whole row of logits / T


def sample_tokens(logits, uniforms, sampler: SamplerSpec) -> np.ndarray:
    """One token per row of (B, V) logits: temperature, then top-k, then top-p, then one draw per row.

    Row b's draw inverts the CDF of its surviving candidates, taken in token-id
    order, at `uniforms[b]`. Every operation is row-wise, so a row's token
    depends only on its own logits and uniform. Unlike noise attached to
    probability-sorted positions, token-id order does not depend on near-ties,
    so a low-bit change in the logits can only change the draw if the uniform
    falls within that change of a CDF step. Top-k keeps exactly k tokens; a tie
    at the k-th value keeps the lower token ids. Greedy (T = 0) is top-1.
    """
    values = np.asarray(logits, dtype=np.float32)
    if values.ndim != 2:
        raise GenerationError(f"sample_tokens needs (batch, vocab) logits, got shape {values.shape}")
    tempered = values / np.float32(sampler.temperature or 1.0)
    return _draw(host_candidates(tempered, _k(sampler, values.shape[-1])), np.asarray(uniforms, np.float32), sampler)[0]


def _k(sampler: SamplerSpec, vocab: int) -> int:
    if sampler.temperature == 0:
        return 1
    return sampler.top_k if 0 < sampler.top_k < vocab else vocab


def host_candidates(values: np.ndarray, k: int) -> Candidates:
    """`Candidates` in NumPy, for the CPU: MLX's CPU partition and `exp` cost several times NumPy's."""
    if not np.isfinite(values).all():
        raise GenerationError("the model produced non-finite logits (NaN or inf); the checkpoint is broken")
    rows, vocab = values.shape
    lse = _logsumexp(values)
    if k >= vocab:
        return Candidates(np.broadcast_to(np.arange(vocab), values.shape), values, lse)
    kth = np.partition(values, vocab - k, axis=-1)[:, vocab - k : vocab - k + 1]
    keep = values >= kth
    for row in np.flatnonzero(keep.sum(axis=-1) > k):  # a tie at the k-th value: rare, fixed row by row
        tied = np.flatnonzero(values[row] == kth[row, 0])
        keep[row, tied[k - int((values[row] > kth[row, 0]).sum()) :]] = False
    ids = np.nonzero(keep)[1].reshape(rows, k)
    return Candidates(ids, np.take_along_axis(values, ids, axis=-1), lse)


def device_candidates(values: mx.array, k: int) -> Candidates:
    """`Candidates` computed where the logits are (a GPU), so only (B, k + 1) values cross to the host.

    Rows whose (k+1)-th value ties the k-th fall back to `host_candidates`,
    which breaks the tie by token id; the result equals the host's exactly.
    """
    _rows, vocab = values.shape
    if k >= vocab:
        return host_candidates(np.array(values), k)
    part = mx.argpartition(-values, kth=k, axis=-1)[:, : k + 1]
    picked, lse = mx.take_along_axis(values, part, axis=-1), mx.logsumexp(values, axis=-1)
    part, picked, lse = np.array(part), np.array(picked), np.array(lse)
    if not (np.isfinite(lse).all() and np.isfinite(picked).all()):
        raise GenerationError("the model produced non-finite logits (NaN or inf); the checkpoint is broken")
    top, beyond = part[:, :k], picked[:, k]
    order = np.argsort(top, axis=-1)
    ids = np.take_along_axis(top, order, axis=-1)
    kept = np.take_along_axis(picked[:, :k], order, axis=-1)
    for row in np.flatnonzero(kept.min(axis=-1) == beyond):
        exact = host_candidates(np.array(values[row : row + 1]), k)
        ids[row], kept[row] = exact.ids[0], exact.values[0]
    return Candidates(ids, kept, lse)


def _draw(c: Candidates, uniforms: np.ndarray, sampler: SamplerSpec) -> tuple[np.ndarray, np.ndarray]:
    """Each row's token and its untruncated ``log_softmax(logits / T)``: top-p over the candidates, then the CDF."""
    rows = np.arange(len(c.ids))
    values = c.values
    if sampler.temperature == 0 or values.shape[-1] == 1:
        choice = values.argmax(axis=-1)
        return c.ids[rows, choice], values[rows, choice] - c.lse
    if sampler.top_p < 1.0:
        order = np.argsort(-values, axis=-1, kind="stable")
        ranked = np.take_along_axis(values, order, axis=-1)
        probs = np.exp(ranked - ranked[:, :1])
        probs /= probs.sum(axis=-1, keepdims=True)
        keep_ranked = (np.cumsum(probs, axis=-1) - probs) < sampler.top_p
        keep = np.empty_like(keep_ranked)
        np.put_along_axis(keep, order, keep_ranked, axis=-1)
        values = np.where(keep, values, -np.inf)
    cdf = np.cumsum(np.exp(values - values.max(axis=-1, keepdims=True)), axis=-1)
    u = (1.0 - uniforms[:, None]) * cdf[:, -1:]
    choice = np.minimum((cdf < u).sum(axis=-1), values.shape[-1] - 1)
    return c.ids[rows, choice], c.values[rows, choice] - c.lse


def rollout_uniforms(seed: int, sampler: SamplerSpec) -> np.ndarray:
    """The roll-out's own stream: the uniform for each decoding step, from its seed alone."""
    return np.array(mx.random.uniform(shape=(sampler.max_tokens,), key=mx.random.key(seed)))


def _logsumexp(values: np.ndarray) -> np.ndarray:
    """Each row's log-sum-exp, in fp32 (NumPy: MLX's CPU `exp` is scalar)."""
    top = values.max(axis=-1, keepdims=True)
    return top[:, 0] + np.log(np.exp(values - top).sum(axis=-1))


def _token_logprobs(values: np.ndarray, tokens: list[int]) -> np.ndarray:
    """``log_softmax(values)[token]`` per row, in fp32."""
    return values[np.arange(len(tokens)), tokens] - _logsumexp(values)


def _merged_cache(forward: Forward, model, prompts: Sequence[list[int]], group_size: int) -> list:
    """Each prompt (all but its last token) prefilled once, merged into one batch cache with G rows per prompt."""
    per_row = []
    for ids in prompts:
        shared = make_prompt_cache(model)
        if len(ids) > 1:
            forward(mx.array([ids[:-1]]), shared)
            mx.eval([c.state for c in shared])
        per_row.extend([shared] * group_size)
    merged = []
    for layer, kind in enumerate(per_row[0]):
        if not hasattr(kind, "merge"):
            raise GenerationError(f"{type(kind).__name__} caches cannot be batched")
        merged.append(kind.merge([row[layer] for row in per_row]))
    return merged


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
    forward = inference_forward(model, kernels)
    cache = _merged_cache(forward, model, [ids for _, ids in prompts], group_size)
    uniforms = np.stack([rollout_uniforms(seed, sampler) for _, _, seed in order])
    drawn = np.array([ids[-1] for _, ids in prompts for _ in range(group_size)])
    temperature = np.float32(sampler.temperature or 1.0)
    on_host = mx.default_device() == mx.cpu

    tokens: list[list[int]] = [[] for _ in order]
    logprobs: list[list[float]] = [[] for _ in order]
    stopped = [False] * len(order)
    rows = list(range(len(order)))  # batch position -> roll-out
    for t in range(sampler.max_tokens):
        hidden = forward(mx.array(drawn)[:, None], cache)[:, -1, :]
        values = project(model, hidden).astype(mx.float32) / temperature
        k = _k(sampler, values.shape[-1])
        candidates = host_candidates(np.array(values), k) if on_host else device_candidates(values, k)
        drawn, picked = _draw(candidates, uniforms[:, t], sampler)
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


def sequence_logprobs(
    model,
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
        raise GenerationError("sequence_logprobs needs one response per prompt")
    if temperature <= 0:
        raise GenerationError(f"sequence_logprobs needs temperature > 0, got {temperature}")
    if any(len(p) == 0 for p in prompt_ids_list):
        raise GenerationError("sequence_logprobs: empty prompt")
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
    forward: Forward, model, prompt: list[int], responses, temperature: float, chunk: int
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
    cache = make_prompt_cache(model)
    if len(prompt) > 1:
        forward(mx.array([prompt[:-1]]), cache)
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
    hiddens, targets, slots = [], [], []
    for start in range(0, width, _SPAN):
        active = sum(lengths[b] > start for b in order)
        for c in cache:
            if c.keys is not None:
                c.keys, c.values = c.keys[:active], c.values[:active]
        span = min(_SPAN, width - start)
        hidden = forward(mx.array(inputs[:active, start : start + span]), cache)
        positions = []
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
        pieces.append(_token_logprobs(np.array(logits), targets[s : s + chunk]))
    flat = np.concatenate(pieces)
    out = [np.empty(n, dtype=np.float32) for n in lengths]
    at = 0
    for b, start, stop in slots:
        out[b][start:stop] = flat[at : at + stop - start]
        at += stop - start
    return out


# "auto" batches: room for a prompt of this many tokens plus max_tokens per row, and at most this many rows.
PROMPT_ALLOWANCE = 256
MAX_AUTO_ROWS = 256


def kv_bytes_per_token(model) -> int:
    """Bytes one token of one row adds to the KV cache: 2 (keys, values) x layers x KV heads x head dim x dtype."""
    args = model.args
    heads = getattr(args, "num_attention_heads", None)
    kv_heads = getattr(args, "num_key_value_heads", None) or heads
    head_dim = getattr(args, "head_dim", None) or args.hidden_size // heads
    layers = len(model.layers) if hasattr(model, "layers") else args.num_hidden_layers
    itemsize = model.model.norm.weight.dtype.size  # activations' dtype, even for quantised weights
    return 2 * layers * kv_heads * head_dim * itemsize


def batch_rows(batch_size: int | str, model, *, group_size: int, max_tokens: int, kv_cache_mb: int) -> int:
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
    per_row = kv_bytes_per_token(model) * (PROMPT_ALLOWANCE + max_tokens)
    rows = min(MAX_AUTO_ROWS, kv_cache_mb * 2**20 // per_row)
    return max(group_size, rows // group_size * group_size)


def headlines_per_pass(batch_size: int, group_size: int) -> int:
    """How many headlines share one generation pass: the canonical batch composition."""
    return max(1, batch_size // max(1, group_size))


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


def response_text(tokenizer, response: SampledResponse, eos_token_ids: Iterable[int]) -> str:
    """The answer's text: its tokens decoded without the stop token."""
    eos = {int(t) for t in eos_token_ids}
    ids = response.response_ids
    return tokenizer.decode(ids[:-1] if ids and ids[-1] in eos else ids)


def generate_rollouts(
    loaded: LoadedModel,
    prompts: Sequence[tuple[str, list[int]]],
    *,
    group_size: int,
    sampler: SamplerSpec,
    seeds: dict[tuple[str, int], int],
    batch_size: int,
    eos_token_ids: Iterable[int],
    kernels: Kernels = "auto",
) -> list[RolloutRecord]:
    """Sample the roll-outs, then record each with its behaviour log-probs, text and structure score.

    Records come back in prompt order, then roll-out index order.
    """
    eos_token_ids = list(eos_token_ids)
    sampled = sample_in_passes(
        loaded,
        prompts,
        group_size=group_size,
        sampler=sampler,
        seeds=seeds,
        batch_size=batch_size,
        eos_token_ids=eos_token_ids,
        kernels=kernels,
    )
    prompt_of = dict(prompts)
    logprobs = sequence_logprobs(
        loaded.model,
        [prompt_of[s.headline_id] for s in sampled],
        [s.response_ids for s in sampled],
        temperature=sampler.temperature or 1.0,
        kernels=kernels,
    )
    records = []
    for s, lp in zip(sampled, logprobs, strict=True):
        text = response_text(loaded.tokenizer, s, eos_token_ids)
        records.append(
            RolloutRecord(
                headline_id=s.headline_id,
                index=s.index,
                seed=s.seed,
                response_ids=s.response_ids,
                logprobs=[float(x) for x in lp],
                truncated=s.truncated,
                text=text,
                structure_score=structure_score(text),
            )
        )
    return records
