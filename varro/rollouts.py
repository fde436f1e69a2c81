"""The exact record of a day's roll-outs, stored as one content-addressed artifact.

Token ids are kept exactly as sampled (EOS included where generation stopped),
never decoded and re-encoded, so training sees precisely what the behaviour
policy produced. `logprobs[t]` is the behaviour policy's fp32 log-probability of
`response_ids[t]` given the prompt and `response_ids[:t]`, from a teacher-forced
forward pass with the sampling temperature applied.
"""

from __future__ import annotations

import msgspec

from events.schema import SamplerSpec


class PromptRecord(msgspec.Struct, frozen=True, kw_only=True):
    headline_id: str
    prompt_ids: list[int]


class RolloutRecord(msgspec.Struct, frozen=True, kw_only=True):
    headline_id: str
    index: int
    seed: int
    response_ids: list[int]
    logprobs: list[float]
    truncated: bool
    text: str
    structure_score: float


class RolloutArtifact(msgspec.Struct, frozen=True, kw_only=True):
    checkpoint_sha256: str
    sampler: SamplerSpec
    prompts: list[PromptRecord]
    rollouts: list[RolloutRecord]


def encode(artifact: RolloutArtifact) -> bytes:
    return msgspec.msgpack.encode(artifact)


def decode(data: bytes) -> RolloutArtifact:
    return msgspec.msgpack.decode(data, type=RolloutArtifact)
