"""The day-cost model: its counts agree with the real model and the real batch rule, and the CLI explains itself."""

from __future__ import annotations

import dataclasses
import json

import mlx.core as mx
import pytest
from click.testing import CliRunner
from mlx.utils import tree_flatten
from mlx_lm.models import qwen3

from varro import costs
from varro.cli import main
from varro.config import load_config
from varro.generation.batching import batch_rows
from varro.model.shapes import QWEN3_0_6B


def _matrix_params(model) -> int:
    """Every weight matrix's size (the norms' vectors are negligible and not counted)."""
    return sum(v.size for _, v in tree_flatten(model.parameters()) if v.ndim == 2)


def test_parameter_count_matches_the_mlx_lm_model(tiny_model_path):
    config = json.loads((tiny_model_path / "config.json").read_text())
    model = qwen3.Model(qwen3.ModelArgs.from_dict(config))
    assert costs.Shape.from_config(config).params == _matrix_params(model)
    # Qwen3-0.6B's published size: 0.6B parameters, 0.44B of them outside the embedding
    shape = costs.Shape.from_config(QWEN3_0_6B)
    assert shape.params == 595_984_384
    assert shape.layers * shape.layer_params == 440_401_920


def test_rows_per_pass_follow_generations_own_batch_rule(tiny_model_path):
    from varro.model.cache import load_local

    cfg = load_config(None, environ={})
    config = json.loads((tiny_model_path / "config.json").read_text())
    shape = costs.Shape.from_config(config)
    work = costs.workload(cfg, shape, headlines=40, prompt_tokens=115, response_tokens=None, kv_itemsize=4)
    model, _ = load_local(tiny_model_path)
    profile = cfg.generation.profiles[cfg.generation.sampler]
    assert work.rows_per_pass == batch_rows(
        "auto", model, group_size=8, max_tokens=profile.max_tokens, kv_cache_mb=cfg.generation.kv_cache_mb
    )
    assert work.response_tokens == profile.max_tokens
    assert work.rollouts == 35 * 8  # 1/8 of 40 held out


def test_estimate_scales_with_the_day_and_counts_adamw_state():
    machine = costs.Machine(matmul_flops=100e9, bandwidth=10e9, op_overhead_s=20e-6)
    cfg = load_config(None, environ={})
    shape = costs.Shape.from_config(QWEN3_0_6B)
    small, large = (
        costs.estimate_day(
            shape,
            costs.workload(cfg, shape, headlines=n, prompt_tokens=115, response_tokens=100, kv_itemsize=2),
            machine,
        )
        for n in (8, 32)
    )
    assert [s.name for s in small] == ["generate", "train"]
    assert all(b.seconds > 3 * a.seconds for a, b in zip(small, large, strict=True))
    weights = shape.params * 4
    assert large[1].peak_bytes > 5 * weights  # weights, gradients, accumulated gradients, AdamW m and v
    # compute-bound at this size: a day's training is at least its FLOPs at the machine's rate
    tokens = 28 * 8 * 215
    assert large[1].seconds > 3 * shape.forward_flops(tokens, 107) / machine.matmul_flops


def test_probe_measures_this_machine():
    machine = costs.probe(0.1)
    assert 1e8 < machine.matmul_flops < 1e14
    assert 1e7 < machine.bandwidth < 1e13
    assert 0 < machine.op_overhead_s < 0.1


def test_model_cost_cli_estimates_a_shape_without_weights(tmp_path):
    (tmp_path / "qwen3-0.6b").mkdir()
    (tmp_path / "qwen3-0.6b" / "config.json").write_text(json.dumps(QWEN3_0_6B))
    result = CliRunner().invoke(
        main,
        [
            "model",
            "cost",
            str(tmp_path / "qwen3-0.6b"),
            "--headlines",
            "8",
            "--probe-s",
            "0.1",
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "596.0M parameters, 28 layers, vocab 151936" in result.output
    assert "7 generated on x 8 = 56 roll-outs" in result.output
    for stage in ("generate", "train", "day"):
        assert any(line.startswith(stage) and " s  peak " in line for line in result.output.splitlines()), stage


def test_model_cost_cli_names_a_bad_directory(tmp_path):
    result = CliRunner().invoke(main, ["model", "cost", str(tmp_path / "nothing"), "--data-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "has no readable config.json" in result.output and "Traceback" not in result.output
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"model_type": "qwen3"}')
    result = CliRunner().invoke(main, ["model", "cost", str(tmp_path / "bad"), "--data-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "does not describe a decoder model" in result.output
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps(dict(QWEN3_0_6B, model_type="llama")))
    result = CliRunner().invoke(
        main,
        ["model", "cost", str(tmp_path / "llama"), "--data-dir", str(tmp_path)],
        env={"VARRO_MODEL__KERNELS": "numpy"},
    )
    assert result.exit_code != 0
    assert "model.kernels = 'numpy' supports model types" in result.output and "Traceback" not in result.output


def test_on_mlx_kernels_a_bf16_checkpoint_decodes_in_bf16_and_keeps_a_float32_copy_for_the_teacher_pass():
    cfg = load_config(None, environ={})
    shape = costs.Shape.from_config(QWEN3_0_6B)
    machine = costs.Machine(matmul_flops=2.5e11, bandwidth=1e10, op_overhead_s=3e-5)
    stages = {}
    for dtype in ("float32", "bfloat16"):
        itemsize = costs.dtype_bytes({"torch_dtype": dtype})
        work = costs.workload(cfg, shape, headlines=16, prompt_tokens=140, response_tokens=None, kv_itemsize=itemsize)
        stages[dtype] = (work, costs.estimate_day(shape, work, machine)[0])
    (w32, g32), (w16, g16) = stages["float32"], stages["bfloat16"]
    assert w16.itemsize == 2 and w32.itemsize == 4
    rows = min(w16.rows_per_pass, w16.rollouts)
    kv16 = rows * (w16.prompt_tokens + w16.response_tokens) * shape.kv_bytes_per_token(2)
    logits = rows * shape.vocab * 4 * 2
    assert g16.peak_bytes == shape.params * (2 + 4) + kv16 + logits  # bf16 weights, their fp32 copy, bf16 KV
    # half the bytes per decoding step's weight read and KV, so per pass of the same rows it is cheaper
    per_pass16 = g16.parts["decode"] / -(-w16.rollouts // rows)
    rows32 = min(w32.rows_per_pass, w32.rollouts)
    per_pass32 = g32.parts["decode"] / -(-w32.rollouts // rows32)
    assert rows >= rows32 and per_pass16 / rows < per_pass32 / rows32


def test_on_the_cpus_numpy_kernels_a_bf16_checkpoint_decodes_in_float32_but_batches_by_its_own_dtype():
    bf16 = {"model_type": "qwen3", "torch_dtype": "bfloat16"}
    assert costs.decode_bytes(bf16, "numpy") == 4 and costs.decode_bytes(bf16, "mlx") == 2
    assert costs.decode_bytes(bf16, "auto") == (4 if mx.default_device() == mx.cpu else 2)
    assert costs.decode_bytes({"model_type": "llama", "torch_dtype": "bfloat16"}, "auto") == 2  # no NumPy kernels
    cfg = load_config(None, environ={})
    shape = costs.Shape.from_config(QWEN3_0_6B)
    machine = costs.Machine(matmul_flops=2.5e11, bandwidth=1e10, op_overhead_s=3e-5)
    kwargs = dict(headlines=16, prompt_tokens=140, response_tokens=None, kv_itemsize=2)
    in_bf16 = costs.workload(cfg, shape, **kwargs)
    in_fp32 = costs.workload(cfg, shape, **kwargs, decode_itemsize=4)
    assert in_fp32.rows_per_pass == in_bf16.rows_per_pass  # the batch rule counts the checkpoint's dtype
    rows = min(in_fp32.rows_per_pass, in_fp32.rollouts)
    kv32 = rows * (in_fp32.prompt_tokens + in_fp32.response_tokens) * shape.kv_bytes_per_token(4)
    generate = costs.estimate_day(shape, in_fp32, machine)[0]
    assert generate.peak_bytes == shape.params * (2 + 4) + kv32 + rows * shape.vocab * 4 * 2
    assert generate.parts["decode"] > costs.estimate_day(shape, in_bf16, machine)[0].parts["decode"]


def test_decoding_on_shared_prompts_holds_and_reads_each_prompt_once_per_headline():
    """Where the NumPy kernels run, a pass holds one copy of each prompt's cache per headline, not one per row."""
    qwen3 = {"model_type": "qwen3"}
    assert costs.shares_prompts(qwen3, "numpy") and not costs.shares_prompts(qwen3, "mlx")
    assert not costs.shares_prompts({"model_type": "llama"}, "auto")
    cfg = load_config(None, environ={})
    shape = costs.Shape.from_config(QWEN3_0_6B)
    machine = costs.Machine(matmul_flops=2.5e11, bandwidth=1e10, op_overhead_s=3e-5)
    kwargs = dict(headlines=16, prompt_tokens=140, response_tokens=None, kv_itemsize=4)
    per_row, shared = (costs.workload(cfg, shape, **kwargs, shared_prompt=on) for on in (False, True))
    (a, b) = (costs.estimate_day(shape, w, machine)[0] for w in (per_row, shared))
    rows = min(shared.rows_per_pass, shared.rollouts)
    copies_saved = rows - rows / shared.group_size
    assert a.peak_bytes - b.peak_bytes == copies_saved * shared.prompt_tokens * shape.kv_bytes_per_token(4)
    assert b.parts["decode"] < a.parts["decode"] and b.parts["teacher"] == a.parts["teacher"]


def test_a_day_that_does_not_fit_is_offered_the_largest_setting_that_does():
    """35 Qwen3-0.6B-shaped headlines: memory between the micro-batch-4 and -8 training peaks asks for 4."""
    cfg = load_config(None, environ={})
    shape = costs.Shape.from_config(QWEN3_0_6B)
    machine = costs.Machine(matmul_flops=2.5e11, bandwidth=1e10, op_overhead_s=3e-5)
    work = costs.workload(cfg, shape, headlines=35, prompt_tokens=140, response_tokens=None, kv_itemsize=2)
    assert work.microbatch_size == 8

    def peaks(**changes):
        return {s.name: s.peak_bytes for s in costs.estimate_day(shape, dataclasses.replace(work, **changes), machine)}

    at8, at4 = peaks(), peaks(microbatch_size=4)
    assert at4["train"] < at8["train"] and at8["generate"] < at4["train"]
    keep = 1 - costs.MEMORY_MARGIN
    between = (at4["train"] + at8["train"]) / 2 / keep  # the share fit uses lies between the two peaks
    verdict = costs.fit(shape, work, machine, between)
    assert not verdict.fits and verdict.advice == "train.microbatch_size = 4" and verdict.peak.name == "train"
    assert costs.fit(shape, work, machine, at8["train"] / keep * 1.01).fits
    tight = costs.fit(shape, work, machine, peaks(microbatch_size=1)["train"] / keep * 0.99)
    assert tight.advice == "a smaller model (one sequence is too big)"
    # a generation pass over the budget is offered fewer rows, in whole headlines
    rows = min(work.rows_per_pass, work.rollouts)
    half = peaks(rows_per_pass=rows // 2 // 8 * 8)["generate"]
    squeezed = costs.fit(shape, dataclasses.replace(work, microbatch_size=1), machine, (half + 1) / keep)
    assert squeezed.advice is not None and squeezed.advice.startswith("generation.batch_size = ")
    assert int(squeezed.advice.split("= ")[1].split(";")[0]) % 8 == 0
    assert "; a smaller model (one sequence is too big)" in squeezed.advice  # training is over it as well


def test_model_cost_cli_says_whether_the_day_fits(tmp_path):
    (tmp_path / "qwen3-0.6b").mkdir()
    (tmp_path / "qwen3-0.6b" / "config.json").write_text(json.dumps(dict(QWEN3_0_6B, torch_dtype="bfloat16")))
    args = ["model", "cost", str(tmp_path / "qwen3-0.6b"), "--probe-s", "0.1", "--data-dir", str(tmp_path)]
    roomy = CliRunner().invoke(main, [*args, "--memory-gib", "1000"])
    assert roomy.exit_code == 0, roomy.output
    assert "memory: fits (" in roomy.output
    small = CliRunner().invoke(main, [*args, "--headlines", "35", "--memory-gib", "12"])
    assert small.exit_code == 0, small.output
    assert "memory: does not fit (train peaks at" in small.output
    assert "of 12.0 GiB, over all but 25%); try " in small.output


def qwen_training(*, headlines: int, prompt: int, response: int, minibatches: int, micro: int) -> costs.StageCost:
    """The training stage's estimate for a Qwen3-0.6B-shaped day of `headlines` x 8 sequences, nothing held out."""
    work = costs.Workload(
        headlines=headlines,
        group_size=8,
        prompt_tokens=prompt,
        response_tokens=response,
        rows_per_pass=8 * headlines,
        minibatches=minibatches,
        microbatch_size=micro,
        holdout_share=0.0,
        reference_pass=False,
    )
    machine = costs.Machine(matmul_flops=100e9, bandwidth=10e9, op_overhead_s=20e-6)
    return costs.estimate_day(costs.Shape.from_config(QWEN3_0_6B), work, machine)[1]


def test_a_micro_batch_is_never_larger_than_its_minibatch():
    """16 sequences in 4 minibatches train as micro-batches of 4 whatever microbatch_size says (as the trainer does)."""

    def train(minibatches: int, micro: int) -> costs.StageCost:
        return qwen_training(headlines=2, prompt=146, response=160, minibatches=minibatches, micro=micro)

    assert train(4, 8).peak_bytes == train(4, 4).peak_bytes < train(1, 8).peak_bytes
    assert "in 4 microbatches of 4" in train(4, 8).detail


def test_accumulated_gradients_count_only_when_a_minibatch_spans_several_micro_batches():
    def peak(micro: int) -> float:
        return qwen_training(headlines=1, prompt=48, response=80, minibatches=1, micro=micro).peak_bytes

    weights = costs.Shape.from_config(QWEN3_0_6B).params * 4
    one, two = peak(8), peak(4)  # 8 sequences: one micro-batch of 8, or two of 4
    # the cached parent (float32 here), weights, gradients, m, v; then activations and the head's chunk
    per_micro_batch = one - 5 * weights
    # two micro-batches of half the size: half of those, and one more (accumulated) gradient tree
    assert two == pytest.approx(6 * weights + per_micro_batch / 2)
