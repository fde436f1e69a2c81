"""Joining the roll-out artifact with the ranks, and right-padded collation."""

import numpy as np
import pytest

from events.schema import RankedGroup, SamplerSpec
from varro.gspo.batch import TrainingDataError, build_sequences, collate, microbatches, plan_minibatches
from varro.rollouts import PromptRecord, RolloutArtifact, RolloutRecord


def artifact(n=3):
    rollouts = [
        RolloutRecord(
            headline_id="h",
            index=i,
            seed=i,
            response_ids=[10 + i, 20, 0],
            logprobs=[-1.0, -2.0, -0.5],
            truncated=False,
            text="",
            structure_score=0.0,
        )
        for i in range(n)
    ]
    return RolloutArtifact(
        checkpoint_sha256="c" * 64,
        sampler=SamplerSpec(),
        prompts=[PromptRecord(headline_id="h", prompt_ids=[1, 2, 3, 4])],
        rollouts=rollouts,
    )


def group(n=3, **kw):
    return RankedGroup(
        headline_id="h", ranks=list(range(1, n + 1)), rewards=[1.0, 0.5, 0.0][:n], raw_scores=[0.9, None, 0.1][:n], **kw
    )


def test_build_sequences_joins_by_headline_and_index():
    (seqs,) = build_sequences(artifact(), [group()])
    assert [s.response_ids for s in seqs] == [(10, 20, 0), (11, 20, 0), (12, 20, 0)]
    assert [s.reward for s in seqs] == [1.0, 0.5, 0.0]
    assert seqs[1].raw_score is None and seqs[0].prompt_ids == (1, 2, 3, 4)


def test_build_sequences_names_what_is_missing():
    with pytest.raises(TrainingDataError, match="h#2"):
        build_sequences(artifact(2), [group()])
    with pytest.raises(TrainingDataError, match="no prompt"):
        build_sequences(artifact(), [RankedGroup(headline_id="x", ranks=[1], rewards=[1.0], raw_scores=[None])])
    good = artifact()
    short = RolloutRecord(
        headline_id="h",
        index=2,
        seed=0,
        response_ids=[5, 0],
        logprobs=[-1.0],
        truncated=False,
        text="",
        structure_score=0.0,
    )
    bad = RolloutArtifact(
        checkpoint_sha256=good.checkpoint_sha256,
        sampler=good.sampler,
        prompts=good.prompts,
        rollouts=[*good.rollouts[:2], short],
    )
    with pytest.raises(TrainingDataError, match="1 log-probs for 2"):
        build_sequences(bad, [group()])
    with pytest.raises(TrainingDataError, match="no ranked groups"):
        build_sequences(artifact(), [])


def test_collate_right_pads_and_aligns_columns():
    (seqs,) = build_sequences(artifact(), [group()])
    seqs = [
        seqs[0],
        type(seqs[0])(
            **{**seqs[1].__dict__, "prompt_ids": (7, 8), "response_ids": (9,), "behaviour_logprobs": (-3.0,)}
        ),
    ]
    b = collate(seqs, loss_on="response")
    assert b.tokens.shape == (2, 16)
    assert b.tokens[0, :7].tolist() == [1, 2, 3, 4, 10, 20, 0] and not b.tokens[0, 7:].any()
    assert b.start == 1  # min prompt length - 1
    # response token t of a sequence with P prompt tokens sits at column P-1+t-start
    assert np.nonzero(b.loss_mask[0])[0].tolist() == [2, 3, 4]
    assert np.nonzero(b.loss_mask[1])[0].tolist() == [0]
    assert b.behaviour[0, 2:5].tolist() == [-1.0, -2.0, -0.5] and b.behaviour[1, 0] == -3.0
    full = collate(seqs, loss_on="full")
    assert full.start == 0 and full.loss_mask[0].sum() == 6 and full.loss_mask[1].sum() == 2
    np.testing.assert_array_equal(full.response_mask[0], (full.behaviour[0] != 0).astype(np.float32))


def test_minibatch_plan_is_a_seeded_partition():
    parts = plan_minibatches(10, 4, seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    assert [len(p) for p in parts] == [3, 3, 2, 2]
    assert all((a == b).all() for a, b in zip(parts, plan_minibatches(10, 4, seed=3), strict=True))
    assert any((a != b).any() for a, b in zip(parts, plan_minibatches(10, 4, seed=4), strict=True))
    assert len(plan_minibatches(2, 4, seed=0)) == 2
    assert [len(m) for m in microbatches(np.arange(7), 3)] == [3, 3, 1]
    with pytest.raises(ValueError, match="minibatches"):
        plan_minibatches(3, 0, seed=0)
