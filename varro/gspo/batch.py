"""Training sequences: the day's recorded roll-outs joined with their rewards.

The token ids are exactly those recorded at generation (prompt ids, then the
sampled response ids with EOS where generation stopped) — never decoded and
re-encoded — so the loss is taken on precisely what the behaviour policy did.

Batches are right-padded: mlx_lm models apply only a causal mask, so padding
after a sequence cannot influence any earlier position, and the padded
positions are simply left out of every sum through the masks built here.

Position convention: column j of a batch's log-prob arrays is
log π(tokens[j+1] | tokens[:j+1]), for j from `start` to L−2. For a sequence with
P prompt and R response tokens, response token t sits at column P−1+t.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from events.errors import PermanentError
from events.schema import RankedGroup
from varro.rollouts import RolloutArtifact

PAD_MULTIPLE = 16
"""Batch lengths are rounded up to a multiple of this, so a compiled step sees few distinct shapes."""


class TrainingDataError(PermanentError, ValueError):
    """The ranked groups and the roll-out artifact do not describe the same roll-outs."""


@dataclass(frozen=True)
class TrainingSequence:
    headline_id: str
    index: int
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    behaviour_logprobs: tuple[float, ...]
    reward: float
    raw_score: float | None
    rank: int

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


@dataclass(frozen=True)
class Batch:
    """Right-padded numpy arrays for one micro-batch (see the module docstring for columns)."""

    tokens: np.ndarray  # int32 [B, L]
    start: int
    loss_mask: np.ndarray  # float32 [B, L-1-start]: tokens in the loss
    response_mask: np.ndarray  # float32 [B, L-1-start]: sampled tokens (for the behaviour weight)
    behaviour: np.ndarray  # float32 [B, L-1-start]: behaviour log-probs at response columns, 0 elsewhere


def build_sequences(artifact: RolloutArtifact, groups: Sequence[RankedGroup]) -> list[list[TrainingSequence]]:
    """Join every ranked roll-out with its recorded tokens, by (headline_id, index).

    Returns one list per headline group, in the order of `groups`. Every ranked
    roll-out must be in the artifact with a non-empty response and one behaviour
    log-prob per response token; otherwise a TrainingDataError names the roll-out.
    """
    prompts = {p.headline_id: p.prompt_ids for p in artifact.prompts}
    records = {(r.headline_id, r.index): r for r in artifact.rollouts}
    out: list[list[TrainingSequence]] = []
    for group in groups:
        if group.headline_id not in prompts:
            raise TrainingDataError(
                f"headline {group.headline_id} is ranked but has no prompt in the roll-out artifact"
            )
        if not (len(group.ranks) == len(group.rewards) == len(group.raw_scores)):
            raise TrainingDataError(
                f"headline {group.headline_id}: {len(group.ranks)} ranks, {len(group.rewards)} rewards, "
                f"{len(group.raw_scores)} raw scores"
            )
        prompt = tuple(prompts[group.headline_id])
        if not prompt:
            raise TrainingDataError(f"headline {group.headline_id} has an empty prompt")
        seqs = []
        for index, (rank, reward, raw) in enumerate(zip(group.ranks, group.rewards, group.raw_scores, strict=True)):
            record = records.get((group.headline_id, index))
            if record is None:
                raise TrainingDataError(f"roll-out {group.headline_id}#{index} is ranked but not in the artifact")
            if not record.response_ids:
                raise TrainingDataError(f"roll-out {group.headline_id}#{index} has no response tokens")
            if len(record.logprobs) != len(record.response_ids):
                raise TrainingDataError(
                    f"roll-out {group.headline_id}#{index}: {len(record.logprobs)} log-probs for "
                    f"{len(record.response_ids)} response tokens"
                )
            if not np.isfinite(reward):
                raise TrainingDataError(f"roll-out {group.headline_id}#{index} has a non-finite reward {reward}")
            seqs.append(
                TrainingSequence(
                    headline_id=group.headline_id,
                    index=index,
                    prompt_ids=prompt,
                    response_ids=tuple(record.response_ids),
                    behaviour_logprobs=tuple(record.logprobs),
                    reward=float(reward),
                    raw_score=None if raw is None else float(raw),
                    rank=int(rank),
                )
            )
        out.append(seqs)
    if not out:
        raise TrainingDataError("no ranked groups to train on")
    return out


def collate(seqs: Sequence[TrainingSequence], *, loss_on: str, pad_id: int = 0) -> Batch:
    """Right-pad `seqs` into one batch; columns start at the first column any loss needs."""
    if loss_on not in ("response", "full"):
        raise ValueError(f"train.loss_on must be 'response' or 'full', got {loss_on!r}")
    longest = max(s.length for s in seqs)
    width = -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE
    start = 0 if loss_on == "full" else min(len(s.prompt_ids) for s in seqs) - 1
    cols = width - 1 - start
    tokens = np.full((len(seqs), width), pad_id, dtype=np.int32)
    loss_mask = np.zeros((len(seqs), cols), dtype=np.float32)
    response_mask = np.zeros((len(seqs), cols), dtype=np.float32)
    behaviour = np.zeros((len(seqs), cols), dtype=np.float32)
    for b, s in enumerate(seqs):
        p, r = len(s.prompt_ids), len(s.response_ids)
        tokens[b, :p] = s.prompt_ids
        tokens[b, p : p + r] = s.response_ids
        first = p - 1 - start
        response_mask[b, first : first + r] = 1.0
        behaviour[b, first : first + r] = s.behaviour_logprobs
        if loss_on == "full":
            loss_mask[b, : p + r - 1] = 1.0
        else:
            loss_mask[b, first : first + r] = 1.0
    return Batch(tokens=tokens, start=start, loss_mask=loss_mask, response_mask=response_mask, behaviour=behaviour)


def plan_minibatches(n: int, minibatches: int, seed: int) -> list[np.ndarray]:
    """Shuffle sequence indices with `seed` and split them into (at most) `minibatches` near-equal parts."""
    if minibatches < 1:
        raise ValueError(f"train.minibatches must be >= 1, got {minibatches}")
    order = np.random.default_rng(seed).permutation(n)
    return [part for part in np.array_split(order, min(minibatches, n)) if part.size]


def microbatches(indices: np.ndarray, size: int) -> list[np.ndarray]:
    if size < 1:
        raise ValueError(f"train.microbatch_size must be >= 1, got {size}")
    return [indices[i : i + size] for i in range(0, len(indices), size)]
