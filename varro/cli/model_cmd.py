"""`varro model`: build the default model, and describe any checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from varro.cli.common import config_options
from varro.config import VarroConfig


@click.group()
def model() -> None:
    """The policy model: the built-in varro-tiny, local checkpoints, hub models."""


@model.command("init")
@click.option("--force", is_flag=True, help="Rebuild even if the cached build exists.")
def init(force: bool) -> None:
    """Build (or find) the project's own small model "varro-tiny" and print where it is."""
    from varro.model.cache import checkpoint_sha256, default_model_path, ensure_default_model

    target = default_model_path()
    if target.exists() and not force:
        click.echo(f"varro-tiny already built: {target}")
    else:
        click.echo(f"building varro-tiny into {target} ...")
        started = time.perf_counter()
        ensure_default_model(force=force, log=lambda line: click.echo(f"  {line}"))
        click.echo(f"built in {time.perf_counter() - started:.0f}s")
    click.echo(f"sha256 {checkpoint_sha256(target)}")


@model.command("info")
@click.argument("where", required=False)
@config_options
def info(where: str | None, cfg: VarroConfig) -> None:
    """Describe a checkpoint: WHERE is a directory or hub id (default: the configured base model)."""
    from varro.model.cache import ModelCache, ModelError, checkpoint_sha256

    cache = ModelCache(cfg)
    try:
        if where is None:
            ref = cache.base_ref()
            path, sha = Path(ref.path), ref.sha256
        else:
            path = Path(where).expanduser()
            if not path.is_dir() and where.startswith(("/", ".", "~")):
                raise ModelError(f"no model directory at {where}")
            if not path.is_dir():
                from mlx_lm.utils import _download

                path = Path(_download(where))
            sha = checkpoint_sha256(path)
    except (ModelError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise click.ClickException(f"{path} has no readable config.json: {exc}") from None
    rows = [
        ("path", str(path)),
        ("sha256", sha),
        ("model_type", config.get("model_type", "?")),
        ("layers", config.get("num_hidden_layers", "?")),
        ("hidden size", config.get("hidden_size", "?")),
        ("heads / kv heads", f"{config.get('num_attention_heads', '?')} / {config.get('num_key_value_heads', '?')}"),
        ("vocab", config.get("vocab_size", "?")),
        ("tied embeddings", config.get("tie_word_embeddings", "?")),
        ("eos ids", config.get("eos_token_id", "?")),
        ("files", ", ".join(sorted(p.name for p in path.iterdir() if not p.name.startswith(".")))),
    ]
    for key, value in rows:
        click.echo(f"{key:18s} {value}")


@model.command("cost")
@click.argument("where", required=False, type=click.Path(file_okay=False))
@click.option("--headlines", type=click.IntRange(min=1), default=35, show_default=True, help="Headlines in the day.")
@click.option(
    "--prompt-tokens",
    type=click.IntRange(min=1),
    default=140,
    show_default=True,
    help="Mean prompt length (sample days: 140).",
)
@click.option(
    "--response-tokens",
    type=click.IntRange(min=1),
    help="Mean roll-out length (default: the sampler's max_tokens, the worst case).",
)
@click.option("--probe-s", type=click.FloatRange(min=0.1), default=1.0, show_default=True, help="Seconds per probe.")
@click.option(
    "--memory-gib",
    type=click.FloatRange(min=0.1),
    help="Memory the day must fit in (default: this machine's physical memory).",
)
@config_options
def cost(
    where: str | None,
    headlines: int,
    prompt_tokens: int,
    response_tokens: int | None,
    probe_s: float,
    memory_gib: float | None,
    cfg: VarroConfig,
) -> None:
    """Estimate a day's time and peak memory here, from the model's shape and this machine's measured throughputs.

    WHERE is a directory with the checkpoint's config.json (weights are not read);
    default: the configured base model.
    """
    from varro import costs
    from varro.errors import UsageProblem
    from varro.model.forward import ForwardError

    if where is None:
        from varro.model.cache import ModelCache, ModelError

        try:
            path = Path(ModelCache(cfg).base_ref().path)
        except (ModelError, OSError) as exc:
            raise click.ClickException(str(exc)) from None
    else:
        path = Path(where).expanduser()
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        shape = costs.Shape.from_config(config)
        work = costs.workload(
            cfg,
            shape,
            headlines=headlines,
            prompt_tokens=prompt_tokens,
            response_tokens=response_tokens,
            kv_itemsize=costs.dtype_bytes(config),
            decode_itemsize=costs.decode_bytes(config, cfg.model.kernels),
            shared_prompt=costs.shares_prompts(config, cfg.model.kernels),
        )
    except (OSError, json.JSONDecodeError) as exc:
        raise click.ClickException(f"{path} has no readable config.json: {exc}") from None
    except (UsageProblem, ForwardError) as exc:
        raise click.ClickException(str(exc)) from None
    machine = costs.probe(probe_s)
    click.echo(f"model {path.name}: {shape.params / 1e6:.1f}M parameters, {shape.layers} layers, vocab {shape.vocab}")
    click.echo(
        f"machine: matmul {machine.matmul_flops / 1e9:.0f} GFLOP/s, bandwidth {machine.bandwidth / 1e9:.1f} GB/s, "
        f"{machine.op_overhead_s * 1e6:.0f} us per operation (probed now)"
    )
    click.echo(
        f"day: {work.headlines} headlines, {work.generated_headlines} generated on x {work.group_size} = "
        f"{work.rollouts} roll-outs of {work.prompt_tokens} + {work.response_tokens} tokens"
    )
    stages = costs.estimate_day(shape, work, machine, logprob_chunk=cfg.train.logprob_chunk)
    for stage in stages:
        click.echo(
            f"{stage.name:9s} {stage.seconds:9.1f} s  peak {stage.peak_bytes / 2**30:6.2f} GiB  ({stage.detail})"
        )
    total = sum(stage.seconds for stage in stages)
    peak = max(stage.peak_bytes for stage in stages)
    click.echo(f"{'day':9s} {total:9.1f} s  peak {peak / 2**30:6.2f} GiB  (estimate; BENCHMARKS.md says how close)")
    memory = costs.machine_memory() if memory_gib is None else memory_gib * 2**30
    verdict = costs.fit(shape, work, machine, memory, logprob_chunk=cfg.train.logprob_chunk)
    held = f"{verdict.peak.peak_bytes / 2**30:.2f} GiB of {memory / 2**30:.1f} GiB"
    kept = f"{costs.MEMORY_MARGIN:.0%}"
    if verdict.fits:
        click.echo(f"memory: fits ({held}, with {kept} kept for the estimate running low)")
    else:
        over = f"{verdict.peak.name} peaks at {held}, over all but {kept}"
        click.echo(f"memory: does not fit ({over}); try {verdict.advice}")
