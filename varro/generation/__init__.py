"""Batched, reproducible roll-outs with the behaviour policy's exact log-probs.

All roll-outs of a generation pass decode together, one forward pass of the
model per step. Each headline's prompt is prefilled once for all G siblings,
and on the CPU its KV cache is held and read once per headline as well
(`varro.model.shared_prompt`; mlx_lm's `BatchKVCache`, one copy per row, under
MLX's kernels). The loop is ours rather
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
independent of the batch on the CPU: the padding of the prompts (set by the
longest prompt in the batch) and the rows that still share a product change the
rounding of the attention (differences of about 1e-6 in the log-probs).
Such a difference flips a draw only when the uniform lands that close to a CDF
step, so in practice tokens agree (64 of 64 roll-outs of 160 tokens matched
between headlines generated alone and together), but that is not a guarantee.
`generate_rollouts` therefore fixes the batch composition canonically:
headlines run in consecutive passes of ``batch_size // group_size``, so a
roll-out depends only on its seed, its pass, the kernels and the checkpoint,
and a job split by passes (see jobs.generate) reproduces the unsplit job bit
for bit.

The recorded log-probs are not the decoding pass's: `behaviour_logprobs` (varro.generation.teacher)
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

from events.schema import SamplerSpec
from varro.generation.batching import (
    MAX_AUTO_ROWS,
    PROMPT_ALLOWANCE,
    batch_rows,
    headlines_per_pass,
    kv_bytes_per_token,
)
from varro.generation.decode import SampledResponse, response_text, sample_in_passes, sample_responses
from varro.generation.sampling import (
    Candidates,
    GenerationError,
    device_candidates,
    host_candidates,
    rollout_uniforms,
    sample_tokens,
    validate_sampler,
)
from varro.generation.teacher import behaviour_logprobs
from varro.model.cache import LoadedModel
from varro.model.forward import Kernels
from varro.rollouts import RolloutRecord
from varro.structure import structure_score

__all__ = [
    "MAX_AUTO_ROWS",
    "PROMPT_ALLOWANCE",
    "Candidates",
    "GenerationError",
    "SampledResponse",
    "batch_rows",
    "behaviour_logprobs",
    "device_candidates",
    "generate_rollouts",
    "headlines_per_pass",
    "host_candidates",
    "kv_bytes_per_token",
    "response_text",
    "rollout_uniforms",
    "sample_in_passes",
    "sample_responses",
    "sample_tokens",
    "validate_sampler",
]


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
    logprobs = behaviour_logprobs(
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
