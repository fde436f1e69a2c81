"""What a day will cost on this machine: time and peak memory, from the model's shape and measured throughputs.

A roofline with an overhead term, per stage. Each pass costs the larger of its
matmul FLOPs over the machine's sustained matmul rate and its memory traffic
over the machine's bandwidth, plus a fixed cost per dispatched operation (MLX's
CPU dispatch and the NumPy hand-offs: what dominates a small model). The three
machine figures come from `probe()`, a few seconds of real MLX work here; the
counts come from the checkpoint's config.json and the run's config, never from
running the model. BENCHMARKS.md compares the estimate with measured days at
the varro-tiny and Qwen3-0.6B shapes; read it as "which stage, what order of
magnitude", not as a promise to the second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from varro.errors import UsageProblem

FLOAT32 = 4
# Operations one decoder layer dispatches, counted from mlx_lm's qwen3 layer and
# Varro's NumPy kernels: projections, norms, rotary, attention, SwiGLU, residuals.
OPS_PER_LAYER_FORWARD = 24
# A training step also runs each layer's backward (about twice the forward's ops)
# and MLX's bookkeeping of the graph.
OPS_PER_LAYER_TRAIN = 3 * OPS_PER_LAYER_FORWARD
# Sampling a token for a batch: the head, the sampler's NumPy hand-off, stopping checks.
OPS_PER_SAMPLED_TOKEN = 12
# AdamW reads gradient, weight, m and v and writes weight, m and v (fused: once each).
ADAMW_PASSES = 7
# Eager MLX runs every norm, rotary, residual, SiLU and softmax as its own pass over
# memory: per token and layer, about this many passes over hidden + MLP-width floats
# forward, and this many forward and backward together. Calibrated on varro-tiny's
# measured GSPO step (bench_train, 0.20 s for 8 x 215 tokens, of which matmuls are
# 0.05 s); the Qwen3-0.6B shape is the out-of-sample check (BENCHMARKS.md).
ELEMENTWISE_PASSES_FORWARD = 35
ELEMENTWISE_PASSES_TRAIN = 100
# The same for the attention scores (per head and key) and the log-softmax over the vocabulary.
SCORE_PASSES = 5
VOCAB_PASSES_FORWARD = 4
VOCAB_PASSES_TRAIN = 12
# Activations one token keeps per layer for the backward pass, in hidden-size units
# (inputs of each projection, norms, rotary outputs) plus 4 x the MLP width
# (gate, up, their product, the SiLU), float32.
ACTIVATION_HIDDEN_UNITS = 8
ACTIVATION_MLP_UNITS = 4
# And the attention's scores and softmax per head and key (the NumPy softmax keeps its output
# for the backward pass): quadratic in the sequence length.
ATTENTION_SCORE_UNITS = 2


@dataclass(frozen=True)
class Shape:
    """The dimensions of a decoder-only checkpoint that decide its cost."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Shape:
        """From a checkpoint's config.json (the Qwen/Llama family's field names)."""
        try:
            heads = int(config["num_attention_heads"])
            hidden = int(config["hidden_size"])
            return cls(
                layers=int(config["num_hidden_layers"]),
                hidden=hidden,
                intermediate=int(config["intermediate_size"]),
                heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                vocab=int(config["vocab_size"]),
                tied=bool(config.get("tie_word_embeddings", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageProblem(f"config.json does not describe a decoder model: {exc!r}") from None

    @property
    def layer_params(self) -> int:
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return attention + 3 * self.hidden * self.intermediate

    @property
    def params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * self.layer_params + embeddings

    def forward_flops(self, tokens: float, context: float, *, head_tokens: float | None = None) -> float:
        """Matmul FLOPs of a forward pass over `tokens` tokens that each attend to `context` positions.

        `head_tokens` is how many of them go through the vocabulary projection
        (all of them by default; only the last one per row when prefilling).
        """
        layers = 2 * self.layer_params * tokens
        attention = 4 * self.heads * self.head_dim * tokens * context
        head = 2 * self.hidden * self.vocab * (tokens if head_tokens is None else head_tokens)
        return self.layers * (layers + attention) + head

    def elementwise_bytes(
        self, tokens: float, context: float, *, train: bool, head_tokens: float | None = None
    ) -> float:
        """Bytes the non-matmul passes move over `tokens` tokens attending to `context` positions."""
        passes = ELEMENTWISE_PASSES_TRAIN if train else ELEMENTWISE_PASSES_FORWARD
        scale = ELEMENTWISE_PASSES_TRAIN / ELEMENTWISE_PASSES_FORWARD if train else 1.0
        layers = (
            tokens
            * self.layers
            * (passes * (self.hidden + self.intermediate) + scale * SCORE_PASSES * self.heads * context)
        )
        vocab = (VOCAB_PASSES_TRAIN if train else VOCAB_PASSES_FORWARD) * self.vocab
        return FLOAT32 * (layers + (tokens if head_tokens is None else head_tokens) * vocab)

    def kv_bytes_per_token(self, itemsize: int = FLOAT32) -> int:
        """As `varro.generation.batching.kv_bytes_per_token` counts it for a loaded model."""
        return 2 * self.layers * self.kv_heads * self.head_dim * itemsize


@dataclass(frozen=True)
class Machine:
    """This machine's sustained throughputs, as `probe` measured them."""

    matmul_flops: float  # FLOP/s of float32 matmuls of a model's shape
    bandwidth: float  # bytes/s of a large elementwise pass
    op_overhead_s: float  # seconds to dispatch and run one tiny operation
    runtime_bytes: float = 0.0  # resident memory of a process that has loaded MLX and mlx_lm, before any model

    def seconds(self, flops: float, moved_bytes: float, ops: float, elementwise_bytes: float = 0.0) -> float:
        """Matmuls (bound by FLOPs or by reading their operands), then the elementwise passes, then dispatch.

        Eager execution runs them one after another, so they add up.
        """
        matmuls = max(flops / self.matmul_flops, moved_bytes / self.bandwidth)
        return matmuls + elementwise_bytes / self.bandwidth + ops * self.op_overhead_s


@dataclass(frozen=True)
class Workload:
    """One day's work, from the run's config and the day's headline count."""

    headlines: int
    group_size: int
    prompt_tokens: int
    response_tokens: int
    rows_per_pass: int
    minibatches: int
    microbatch_size: int
    holdout_share: float
    reference_pass: bool
    itemsize: int = FLOAT32  # bytes per weight and KV element as the checkpoint stores them (`dtype_bytes`)
    decode_itemsize: int = FLOAT32  # the same while decoding: float32 on the CPU's NumPy kernels (`decode_bytes`)
    shared_prompt: bool = False  # each prompt's KV held and read once per headline while decoding (`shares_prompts`)

    @property
    def generated_headlines(self) -> int:
        return max(1, round(self.headlines * (1 - self.holdout_share)))

    @property
    def rollouts(self) -> int:
        return self.generated_headlines * self.group_size


@dataclass(frozen=True)
class StageCost:
    name: str
    seconds: float
    peak_bytes: float
    detail: str
    parts: dict[str, float]  # seconds of each pass within the stage, for comparison with measurements


def _generation(shape: Shape, work: Workload, machine: Machine) -> StageCost:
    rows = max(1, min(work.rows_per_pass, work.rollouts))
    passes = -(-work.rollouts // rows)
    # Decoding runs in `decode_itemsize` (a float32 copy of a half-precision checkpoint on the
    # CPU), the teacher-forced pass on a float32 copy (varro.model.precision).
    weights = shape.params * work.decode_itemsize
    weights32 = shape.params * FLOAT32
    mean_context = work.prompt_tokens + work.response_tokens / 2
    # Copies of each prompt's keys and values a pass holds and reads per step: one per headline
    # where they are shared (varro.model.shared_prompt), else one per row (mlx_lm's batch cache).
    prompt_rows = rows / work.group_size if work.shared_prompt else rows
    kv_read = prompt_rows * work.prompt_tokens + rows * work.response_tokens / 2
    prefill = machine.seconds(
        shape.forward_flops(rows * work.prompt_tokens, work.prompt_tokens / 2, head_tokens=rows),
        weights,
        shape.layers * OPS_PER_LAYER_FORWARD,
        shape.elementwise_bytes(rows * work.prompt_tokens, work.prompt_tokens / 2, train=False, head_tokens=rows),
    )
    step = machine.seconds(
        shape.forward_flops(rows, mean_context),
        weights + kv_read * shape.kv_bytes_per_token(work.decode_itemsize),
        shape.layers * OPS_PER_LAYER_FORWARD + OPS_PER_SAMPLED_TOKEN,
        shape.elementwise_bytes(rows, mean_context, train=False),
    )
    decode = prefill + work.response_tokens * step
    # The teacher-forced pass recording the behaviour log-probs: one forward over every token, per pass.
    tokens = rows * (work.prompt_tokens + work.response_tokens)
    teacher = machine.seconds(
        shape.forward_flops(tokens, (work.prompt_tokens + work.response_tokens) / 2),
        weights32,
        shape.layers * OPS_PER_LAYER_FORWARD,
        shape.elementwise_bytes(tokens, (work.prompt_tokens + work.response_tokens) / 2, train=False),
    )
    kv_held = prompt_rows * work.prompt_tokens + rows * work.response_tokens
    kv = kv_held * shape.kv_bytes_per_token(work.decode_itemsize)
    logits = rows * shape.vocab * FLOAT32 * 2
    stored = shape.params * work.itemsize
    return StageCost(
        "generate",
        passes * (decode + teacher),
        machine.runtime_bytes + stored + (weights32 if work.itemsize != FLOAT32 else 0) + kv + logits,
        f"{work.rollouts} roll-outs in {passes} pass(es) of {rows} rows; "
        f"{work.response_tokens} decode steps of {step * 1e3:.1f} ms, teacher pass {teacher:.1f} s per pass",
        {"decode": passes * decode, "teacher": passes * teacher},
    )


def _training(shape: Shape, work: Workload, machine: Machine, *, chunk: int) -> StageCost:
    sequences = work.rollouts
    length = work.prompt_tokens + work.response_tokens
    tokens = sequences * length
    weights = shape.params * FLOAT32
    per_minibatch = -(-sequences // max(1, work.minibatches))
    # the trainer splits each minibatch into micro-batches: none is larger than its minibatch
    micro = max(1, min(work.microbatch_size, per_minibatch))
    microbatches = -(-sequences // micro)
    # π_old (and the reference) before the epoch and the new policy after it, forward only.
    forward_passes = 3 if work.reference_pass else 2
    measure = forward_passes * machine.seconds(
        shape.forward_flops(tokens, length / 2),
        weights * microbatches,
        microbatches * shape.layers * OPS_PER_LAYER_FORWARD,
        shape.elementwise_bytes(tokens, length / 2, train=False),
    )
    # Each sequence's forward and backward once per epoch (backward = 2 x forward FLOPs), plus
    # the checkpointed head's recompute.
    head_recompute = 2 * shape.hidden * shape.vocab * tokens
    gradients = machine.seconds(
        3 * shape.forward_flops(tokens, length / 2) + head_recompute,
        3 * weights * microbatches,
        microbatches * shape.layers * OPS_PER_LAYER_TRAIN,
        shape.elementwise_bytes(tokens, length / 2, train=True),
    )
    optimizer = work.minibatches * machine.seconds(0.0, ADAMW_PASSES * weights + 2 * weights, 0)
    activations = (
        micro
        * length
        * shape.layers
        * (
            ACTIVATION_HIDDEN_UNITS * shape.hidden
            + ACTIVATION_MLP_UNITS * shape.intermediate
            + ATTENTION_SCORE_UNITS * shape.heads * length
        )
        * FLOAT32
    )
    head = micro * min(chunk, length) * shape.vocab * FLOAT32 * 3
    # weights, gradients and AdamW's m and v; and the minibatch's accumulated gradients when
    # it spans several micro-batches (the trainer drops each minibatch's before the next)
    state = (5 if per_minibatch > micro else 4) * weights
    # the parent checkpoint as loaded, which the model cache keeps beside the trainable float32 copy
    parent = shape.params * work.itemsize
    return StageCost(
        "train",
        measure + gradients + optimizer,
        machine.runtime_bytes + parent + state + activations + head,
        f"{sequences} sequences of {length} tokens in {microbatches} microbatches of {micro}; "
        f"π_old and closing passes {measure:.1f} s, gradients {gradients:.1f} s, "
        f"{work.minibatches} AdamW updates {optimizer:.1f} s",
        {"forward_passes": measure, "gradients": gradients, "adamw": optimizer},
    )


def estimate_day(shape: Shape, work: Workload, machine: Machine, *, logprob_chunk: int = 256) -> list[StageCost]:
    """Generation and training of one day (fetch and a scoring judge are seconds; a model judge is not counted)."""
    if work.headlines < 1:
        raise UsageProblem(f"a day needs at least one headline, got {work.headlines}")
    return [_generation(shape, work, machine), _training(shape, work, machine, chunk=logprob_chunk)]


@dataclass(frozen=True)
class Fit:
    """Whether a day's estimated peak fits in the memory given to `fit`, and the setting that would if not."""

    peak: StageCost
    advice: str | None  # None when it fits

    @property
    def fits(self) -> bool:
        return self.advice is None


# The share of memory `fit` keeps back. The estimate counts MLX's own buffers; a process's
# RSS runs over them: Qwen3-0.6B-shaped days peaked at 1.11x and 1.15x the training estimate
# (2 and 4 headlines), and a 35-headline day was killed at 1.34x (24.2 GB against 18.0 GiB).
# Freed activation buffers stay in glibc's heaps (RSS up to 8 GB over MLX's active memory
# in a 0.6B gradient step); BENCHMARKS.md has the measurements.
MEMORY_MARGIN = 0.25


def fit(
    shape: Shape,
    work: Workload,
    machine: Machine,
    memory: float,
    *,
    logprob_chunk: int = 256,
    margin: float = MEMORY_MARGIN,
) -> Fit:
    """The day's largest stage against `memory`, with `margin` for the estimate running low (BENCHMARKS.md).

    A training stage over it is offered the largest micro-batch, halving from
    `train.microbatch_size`, whose estimate fits; a generation stage, the
    largest pass of whole headlines that does.
    """
    budget = memory * (1 - margin)
    stages = estimate_day(shape, work, machine, logprob_chunk=logprob_chunk)
    peak = max(stages, key=lambda stage: stage.peak_bytes)
    over = [stage.name for stage in stages if stage.peak_bytes > budget]
    if not over:
        return Fit(peak, None)
    advice = []
    if "generate" in over:
        rows = _largest(
            _halvings(min(work.rows_per_pass, work.rollouts), step=work.group_size),
            lambda n: _generation(shape, replace(work, rows_per_pass=n), machine).peak_bytes <= budget,
        )
        advice.append(f"generation.batch_size = {rows}" if rows else "a smaller model (one headline's pass is too big)")
    if "train" in over:
        micro = _largest(
            _halvings(work.microbatch_size, step=1),
            lambda n: (
                _training(shape, replace(work, microbatch_size=n), machine, chunk=logprob_chunk).peak_bytes <= budget
            ),
        )
        advice.append(f"train.microbatch_size = {micro}" if micro else "a smaller model (one sequence is too big)")
    return Fit(peak, "; ".join(advice))


def _halvings(start: int, *, step: int) -> list[int]:
    """start, then halved again and again, in multiples of `step`, down to `step`."""
    sizes = [max(step, start // step * step)]
    while sizes[-1] > step:
        sizes.append(max(step, sizes[-1] // 2 // step * step))
    return sizes


def _largest(sizes: list[int], fits: Callable[[int], bool]) -> int | None:
    return next((n for n in sizes if fits(n)), None)


def machine_memory() -> float:
    """This machine's physical memory in bytes: what a day's peak has to fit in."""
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def probe(seconds: float = 1.0) -> Machine:
    """Measure this machine's matmul rate, bandwidth and per-op overhead with MLX, in about 3 x `seconds`."""
    import mlx.core as mx
    import mlx_lm  # noqa: F401  (part of every worker's resident memory)

    runtime = _resident_bytes()

    def rate(run: Any, work: float) -> float:
        run()  # warm up
        started, count = time.perf_counter(), 0
        while count < 2 or time.perf_counter() - started < seconds:
            run()
            count += 1
        return work * count / (time.perf_counter() - started)

    a, b = mx.random.normal((512, 1024)), mx.random.normal((1024, 3072))
    big = mx.random.normal((32 * 2**20,))
    tiny = mx.ones((8,))
    mx.eval(a, b, big, tiny)
    flops = rate(lambda: mx.eval(a @ b), 2 * 512 * 1024 * 3072)
    bandwidth = rate(lambda: mx.eval(big.sum()), big.nbytes)  # a read-bound pass, as weights and caches are read
    ops_per_run = 64

    def chain() -> None:
        x = tiny
        for _ in range(ops_per_run):
            x = x + 1
            mx.eval(x)

    overhead = 1 / rate(chain, ops_per_run)
    return Machine(matmul_flops=flops, bandwidth=bandwidth, op_overhead_s=overhead, runtime_bytes=runtime)


def _resident_bytes() -> float:
    """This process's resident set now (Linux /proc; elsewhere the high-water mark)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return float(pages * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(peak if sys.platform == "darwin" else peak * 1024)


def dtype_bytes(config: Mapping[str, Any]) -> int:
    """Bytes per activation element as a checkpoint stores it (the batch rule's; training is fp32)."""
    return {"float32": 4, "bfloat16": 2, "float16": 2}.get(str(config.get("torch_dtype", "float32")), 4)


def decode_bytes(config: Mapping[str, Any], kernels: str) -> int:
    """Bytes per weight and KV element while decoding here: float32 where the NumPy kernels run, else as stored.

    `kernels` is the run's `model.kernels`, resolved as generation resolves it (`varro.model.forward`).
    """
    return FLOAT32 if _numpy_decoding(config, kernels) else dtype_bytes(config)


def shares_prompts(config: Mapping[str, Any], kernels: str) -> bool:
    """Whether decoding here holds each prompt's keys and values once per headline: where the NumPy kernels run."""
    return _numpy_decoding(config, kernels)


def _numpy_decoding(config: Mapping[str, Any], kernels: str) -> bool:
    from varro.model.forward import resolve_type

    return resolve_type(str(config.get("model_type", "")), kernels) == "numpy"


def workload(
    cfg: Any,
    shape: Shape,
    *,
    headlines: int,
    prompt_tokens: int,
    response_tokens: int | None,
    kv_itemsize: int,
    decode_itemsize: int | None = None,
    shared_prompt: bool = False,
) -> Workload:
    """A day's `Workload` from the run's config: the same batch rule generation uses (`varro.generation.batching`).

    `kv_itemsize` is the checkpoint's (the batch rule's); `decode_itemsize` what decoding runs in (`decode_bytes`),
    by default the same; `shared_prompt` whether decoding shares each prompt's cache (`shares_prompts`).
    """
    from varro.generation.batching import auto_rows

    gen, train = cfg.generation, cfg.train
    profile = gen.profiles.get(gen.sampler)
    if profile is None:
        raise UsageProblem(f"generation.sampler {gen.sampler!r} is not one of generation.profiles")
    max_tokens = int(profile.max_tokens)
    if gen.batch_size == "auto":
        rows = auto_rows(
            shape.kv_bytes_per_token(kv_itemsize),
            group_size=gen.group_size,
            max_tokens=max_tokens,
            kv_cache_mb=gen.kv_cache_mb,
        )
    else:
        rows = int(gen.batch_size)
    return Workload(
        headlines=headlines,
        group_size=gen.group_size,
        prompt_tokens=prompt_tokens,
        response_tokens=max_tokens if response_tokens is None else min(response_tokens, max_tokens),
        rows_per_pass=rows,
        minibatches=train.minibatches,
        microbatch_size=train.microbatch_size,
        holdout_share=gen.holdout_share,
        reference_pass=train.beta > 0,
        itemsize=kv_itemsize,
        decode_itemsize=kv_itemsize if decode_itemsize is None else decode_itemsize,
        shared_prompt=shared_prompt,
    )
