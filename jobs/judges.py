"""The judges a job uses, as configured: ranking and evaluation share them.

The mlx judge runs `judge.mlx_model` when set, else the policy's base model;
that model is part of the identity of what it judges (`judge_model_ref`).
"""

from __future__ import annotations

from jobs.context import JobContext, base_checkpoint
from varro.judging import build_judges
from varro.judging.base import Judge
from varro.model.cache import load_local


def judge_model_ref(ctx: JobContext) -> str | None:
    """Which model the mlx judge runs: the configured path, else the policy's base model."""
    judge = ctx.cfg.judge
    if judge.kind != "mlx":
        return None
    if judge.mlx_model:
        return judge.mlx_model
    base = base_checkpoint(ctx)
    return f"{base.base_model}@{base.sha256[:12]}"


def configured_judges(ctx: JobContext, judge_model: str | None) -> tuple[Judge, Judge | None]:
    if judge_model is None:
        return build_judges(ctx.cfg.judge)
    if ctx.cfg.judge.mlx_model:
        model, tokenizer = load_local(ctx.cfg.judge.mlx_model)
    else:
        loaded = ctx.models.load(base_checkpoint(ctx))
        model, tokenizer = loaded.model, loaded.tokenizer
    return build_judges(ctx.cfg.judge, model=model, tokenizer=tokenizer, model_name=judge_model)
