"""The day-cost model (`varro model cost`) against what this machine measures, stage by stage.

    .venv/bin/python -m bench.bench_costs [--skip-06b] [--skip-tiny] [--qwen-day N [--microbatch M]]

varro-tiny: runs three bundled sample days with the default config (`varro run`,
embedded server, a temporary data directory) and compares the last trained day's recorded
`RolloutsGenerated.stats.wall_s` and `EpochTrained.metrics.wall_s` with the
estimate for the same headline, roll-out and token counts (taken from the
events). Qwen3-0.6B shape: one GSPO step of `bench_train` (4 x 128 tokens,
gradients and AdamW) measured against the estimate of that step, and with
`--qwen-day N` a real day of N headlines through `varro run`: a randomly
initialised bf16 checkpoint of Qwen3-0.6B's published shape (varro-tiny's
tokenizer; ids past its 2048 decode to nothing), the structure judge, no
verdict; two sample days, the second judging and training on the first and
generating with the result. (On this 24 GB machine a 4-headline day did not
fit: its micro-batches of 8 sequences; see BENCHMARKS.md.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import varro  # noqa: F401  (preloads OpenBLAS before mlx)
from varro import costs
from varro.config import load_config
from varro.model.shapes import QWEN3_0_6B

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, data_dir: str) -> str:
    env = dict(os.environ, VARRO_DATA_DIR=data_dir)
    out = subprocess.run(
        [sys.executable, "-m", "varro.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    )
    return out.stdout


def tiny_day(machine: costs.Machine) -> None:
    from varro.model.cache import ModelCache

    cfg = load_config(None, environ={})
    config = json.loads((Path(ModelCache(cfg).base_ref().path) / "config.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        _cli("run", "--source", "sample", "--to", "2025-08-06", data_dir=tmp)
        events = [json.loads(line)["event"] for line in _cli("events", "export", data_dir=tmp).splitlines()]
        _cli("server", "stop", data_dir=tmp)
    compare_day("varro-tiny", cfg, config, events, machine)


def qwen_day(machine: costs.Machine, headlines: int, microbatch: int | None = None) -> None:
    """Two sample days of `headlines` headlines each with a random Qwen3-0.6B-shaped bf16 checkpoint.

    `microbatch` sets train.microbatch_size (default: the config's, 8).
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import qwen3

    from varro.model.cache import ModelCache
    from varro.model.memory import return_freed_memory

    tiny = Path(ModelCache(load_config(None, environ={})).base_ref().path)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "qwen3-0.6b-shape"
        model_dir.mkdir()
        config = dict(
            json.loads((tiny / "config.json").read_text()),
            **QWEN3_0_6B,
            torch_dtype="bfloat16",
        )
        (model_dir / "config.json").write_text(json.dumps(config))
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (model_dir / name).write_bytes((tiny / name).read_bytes())
        mx.random.seed(0)
        model = qwen3.Model(qwen3.ModelArgs.from_dict(config))
        model.set_dtype(mx.bfloat16)
        mx.save_safetensors(str(model_dir / "model.safetensors"), dict(tree_flatten(model.parameters())))
        del model
        return_freed_memory()  # this process waits beside the day: keep its 1.2 GB out of the day's memory
        toml = Path(tmp) / "varro.toml"
        toml.write_text(
            f'[model]\nbase = "{model_dir}"\n\n[generation]\nmax_headlines = {headlines}\n\n'
            '[judge]\nkind = "structure"\n\n[eval]\npanel = "none"\n'
            + ("" if microbatch is None else f"\n[train]\nmicrobatch_size = {microbatch}\n")
        )
        data = str(Path(tmp) / "data")
        _cli("run", "--source", "sample", "--to", "2025-08-05", "--config", str(toml), data_dir=data)
        events = [json.loads(line)["event"] for line in _cli("events", "export", data_dir=data).splitlines()]
        _cli("server", "stop", data_dir=data)
        cfg = load_config(toml, environ={})
    compare_day("Qwen3-0.6B-shaped", cfg, config, events, machine)


def compare_day(label: str, cfg: Any, config: dict, events: list[dict], machine: costs.Machine) -> None:
    """The estimate for the last trained day's recorded counts, beside its recorded generation and training wall_s."""
    shape, kv_itemsize = costs.Shape.from_config(config), costs.dtype_bytes(config)
    day = max(e["date"] for e in events if e["type"] == "EpochTrained")  # a day that generated and trained
    generated = next(e for e in events if e["type"] == "RolloutsGenerated" and e["date"] == day)["stats"]
    trained = next(e for e in events if e["type"] == "EpochTrained" and e["date"] == day)["metrics"]
    headlines = len(next(e for e in events if e["type"] == "HeadlinesFetched" and e["date"] == day)["headlines"])
    train_response = trained["tokens"] / trained["sequences"]
    response = generated["generated_tokens"] / generated["rollouts"]
    work = costs.workload(
        cfg,
        shape,
        headlines=headlines,
        prompt_tokens=1,
        response_tokens=round(response),
        kv_itemsize=kv_itemsize,
        decode_itemsize=costs.decode_bytes(config, cfg.model.kernels),
        shared_prompt=costs.shares_prompts(config, cfg.model.kernels),
    )
    # the day's own counts: generated headlines and prompt length as the events recorded them
    prompt = round(train_response - response)
    work = dataclasses.replace(work, headlines=generated["headlines"], holdout_share=0.0, prompt_tokens=prompt)
    generate, train = costs.estimate_day(shape, work, machine, logprob_chunk=cfg.train.logprob_chunk)
    print(
        f"{label} day {day}: {work.rollouts} roll-outs, {prompt} prompt + {round(response)} response tokens "
        f"(the trainer's {trained['sequences']} sequences)"
    )
    for name, estimate, measured in (
        ("generate", generate, generated["wall_s"]),
        ("train", train, trained["wall_s"]),
    ):
        print(
            f"  {name:8s} estimate {estimate.seconds:7.1f} s  measured {measured:7.1f} s  "
            f"ratio {estimate.seconds / measured:.2f}  parts { ({k: round(v, 1) for k, v in estimate.parts.items()}) }"
        )
    print(f"  train peak: estimate {train.peak_bytes / 2**20:.0f} MB, measured RSS {trained['peak_rss_mb']:.0f} MB")
    verdict = costs.fit(shape, work, machine, costs.machine_memory(), logprob_chunk=cfg.train.logprob_chunk)
    print(
        f"  fits this machine's {costs.machine_memory() / 2**30:.1f} GiB: {verdict.fits} ({verdict.advice or 'as set'})"
    )


def qwen_step(machine: costs.Machine) -> None:
    shape = costs.Shape.from_config(QWEN3_0_6B)
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_train", "--models", "qwen3-0.6b", "--frameworks", "mlx", "--steps", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    print(out.stdout.strip().splitlines()[-1])
    work = costs.Workload(
        headlines=1,
        group_size=4,
        prompt_tokens=48,
        response_tokens=80,
        rows_per_pass=4,
        minibatches=1,
        microbatch_size=4,
        holdout_share=0.0,
        reference_pass=False,
    )
    _, train = costs.estimate_day(shape, work, machine, logprob_chunk=256)
    step = train.parts["gradients"] + train.parts["adamw"]
    print(
        f"Qwen3-0.6B step (4 x 128 tokens): estimate {step:.1f} s "
        f"(gradients {train.parts['gradients']:.1f}, AdamW {train.parts['adamw']:.1f}), "
        f"peak estimate {train.peak_bytes / 2**30:.1f} GiB; measured: the line above"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-06b", action="store_true")
    parser.add_argument("--skip-tiny", action="store_true")
    parser.add_argument("--qwen-day", type=int, default=0, metavar="N", help="also a 0.6B-shaped day of N headlines")
    parser.add_argument("--microbatch", type=int, help="train.microbatch_size for the 0.6B-shaped day")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    machine = costs.probe(1.0)
    print(
        f"probe: matmul {machine.matmul_flops / 1e9:.0f} GFLOP/s, bandwidth {machine.bandwidth / 1e9:.1f} GB/s, "
        f"{machine.op_overhead_s * 1e6:.0f} us per op"
    )
    if not args.skip_tiny:
        tiny_day(machine)
    if not args.skip_06b:
        qwen_step(machine)
    if args.qwen_day:
        qwen_day(machine, args.qwen_day, args.microbatch)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
