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
