"""Sampling one step for a whole batch: candidates where the logits live, one vectorised draw.

Each row's top-k candidates (exactly k, ties broken towards lower token ids)
and its log-sum-exp are taken in NumPy on the CPU (`host_candidates`) or in
MLX on a GPU (`device_candidates`, so only (B, k + 1) values reach the host),
and the draw inverts each roll-out's own uniform against the CDF of the
candidates that survive temperature, top-k and top-p (`draw`), so a token is a
function of the roll-out's seed and the logits it sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from events.errors import PermanentError
from events.schema import SamplerSpec


class GenerationError(PermanentError, ValueError):
    """Bad generation input: an empty prompt, a missing seed, an invalid sampler setting."""


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


def sample_tokens(logits: np.ndarray | mx.array, uniforms: np.ndarray, sampler: SamplerSpec) -> np.ndarray:
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
    return draw(
        host_candidates(tempered, candidate_count(sampler, values.shape[-1])), np.asarray(uniforms, np.float32), sampler
    )[0]


def candidate_count(sampler: SamplerSpec, vocab: int) -> int:
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
    on_device = mx.argpartition(-values, kth=k, axis=-1)[:, : k + 1]
    picked_on_device, lse_on_device = mx.take_along_axis(values, on_device, axis=-1), mx.logsumexp(values, axis=-1)
    part, picked, lse = np.array(on_device), np.array(picked_on_device), np.array(lse_on_device)
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


def draw(c: Candidates, uniforms: np.ndarray, sampler: SamplerSpec) -> tuple[np.ndarray, np.ndarray]:
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
    lse: np.ndarray = top[:, 0] + np.log(np.exp(values - top).sum(axis=-1))
    return lse


def token_logprobs(values: np.ndarray, tokens: list[int]) -> np.ndarray:
    """``log_softmax(values)[token]`` per row, in fp32."""
    logprobs: np.ndarray = values[np.arange(len(tokens)), tokens] - _logsumexp(values)
    return logprobs
