"""Ranking roll-outs against what happened: judges, the iterative selection,
strict ranks and rewards. `build_judges` turns the `judge` config section into
the primary judge and its fallback."""

from __future__ import annotations

import os
from typing import Any

from varro.config import JudgeConfig
from varro.judging.base import Judge, JudgeError, JudgeFailed, RoundAnswer, RoundRequest
from varro.judging.day import DayRanking, rank_day
from varro.judging.lexical import LexicalJudge
from varro.judging.outcomes import NoOutcomes, OutcomesMissing, outcome_date_for, outcome_headlines
from varro.judging.prompt import JudgePrompt
from varro.judging.ranks import rewards_from_ranks, strict_ranks
from varro.judging.selection import GroupToRank, rank_groups
from varro.judging.semantic import SemanticJudge

__all__ = [
    "DayRanking",
    "GroupToRank",
    "Judge",
    "JudgeError",
    "JudgeFailed",
    "JudgePrompt",
    "LexicalJudge",
    "NoOutcomes",
    "OutcomesMissing",
    "RoundAnswer",
    "RoundRequest",
    "SemanticJudge",
    "build_judge",
    "build_judges",
    "outcome_date_for",
    "outcome_headlines",
    "rank_day",
    "rank_groups",
    "rewards_from_ranks",
    "strict_ranks",
]


def build_judge(
    kind: str, cfg: JudgeConfig, *, model: Any = None, tokenizer: Any = None, model_name: str = ""
) -> Judge:
    """One judge of `kind`; the mlx judge needs the loaded model and tokenizer."""
    prompt = JudgePrompt(max_outcomes=cfg.max_outcomes, candidate_chars=cfg.candidate_chars)
    if kind == "lexical":
        return LexicalJudge()
    if kind == "semantic":
        return SemanticJudge()
    if kind == "structure":
        from varro.judging.structure_judge import StructureJudge

        return StructureJudge()
    # httpx and mlx are imported only for the judge that needs them, so a process
    # that ranks lexically (or only reads events) never loads them.
    if kind == "http":
        from varro.judging.http import HttpJudge
        from varro.judging.letter_tokens import letter_token_ids

        letter_ids = None
        if cfg.http_constraint == "logit_bias":
            if not cfg.http_tokenizer:
                raise JudgeError("judge.http_constraint = 'logit_bias' needs judge.http_tokenizer (the served model's)")
            letter_ids = letter_token_ids(cfg.http_tokenizer)
        return HttpJudge(
            cfg.http_url,
            cfg.http_model,
            api_key=os.environ.get(cfg.http_api_key_env),
            timeout_s=cfg.http_timeout_s,
            retries=cfg.retries,
            backoff_s=cfg.http_backoff_s,
            prompt=prompt,
            concurrency=cfg.http_concurrency,
            constraint=cfg.http_constraint,
            letter_ids=letter_ids,
            max_tokens=cfg.http_max_tokens,
        )
    if kind == "mlx":
        if model is None or tokenizer is None:
            raise JudgeError("the mlx judge needs a loaded model and tokenizer")
        from varro.judging.local import MlxJudge

        return MlxJudge(
            model,
            tokenizer,
            name=f"mlx:{model_name}" if model_name else "mlx",
            batch_size=cfg.batch_size,
            prompt=prompt,
        )
    raise JudgeError(f"unknown judge kind {kind!r} (known: lexical, semantic, structure, http, mlx)")


def build_judges(
    cfg: JudgeConfig, *, model: Any = None, tokenizer: Any = None, model_name: str = ""
) -> tuple[Judge, Judge | None]:
    """The configured primary judge and its fallback (None for fallback = "none")."""
    primary = build_judge(cfg.kind, cfg, model=model, tokenizer=tokenizer, model_name=model_name)
    fallback = None if cfg.fallback == "none" else build_judge(cfg.fallback, cfg)
    return primary, fallback
