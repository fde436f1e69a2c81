"""Head-to-head judging of two checkpoints' roll-outs on the same panel headline and seed.

A scoring judge (lexical, semantic, structure) scores both answers on their
own and the higher wins; equal scores tie. A judge that picks (mlx, http) is
asked twice, with A shown first and with B shown first: a pair whose two
answers disagree is a tie, which cancels a preference for a position, and how
often that happened is reported. A pair the picking judge could not answer
in either order is decided by the fallback judge's scores (or tied without
one) and counted as a judge failure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from varro.config import VarroConfig
from varro.evaluation.panel import PanelItem
from varro.judging.base import Judge, RoundRequest, ScoringJudge
from varro.structure import structure_score

_TIE_TOLERANCE = 1e-12


class SideText(msgspec.Struct, frozen=True, kw_only=True):
    """One roll-out of one side on one panel headline."""

    headline_id: str
    index: int
    seed: int
    text: str
    n_tokens: int
    truncated: bool


class PairResult(msgspec.Struct, frozen=True, kw_only=True):
    headline_id: str
    index: int
    verdict: str  # "a" | "b" | "tie"
    a_score: float | None = None
    b_score: float | None = None
    order_disagreement: bool = False
    judge_failed: bool = False


class SideMetrics(msgspec.Struct, frozen=True, kw_only=True):
    rollouts: int
    judge_score: float | None
    structure: float
    tokens: float
    truncated: float
    leaked: float
    degenerate: float


def _decide(a: float, b: float) -> str:
    if abs(a - b) <= _TIE_TOLERANCE:
        return "tie"
    return "b" if b > a else "a"


def _scores(judge: ScoringJudge, item: PanelItem, a: str, b: str) -> tuple[float, float]:
    request = RoundRequest(
        key=item.headline.id, headline=item.headline.text, outcomes=tuple(item.outcomes), candidates=(a, b)
    )
    a_score, b_score = judge.score(request)
    return float(a_score), float(b_score)


def judge_pairs(
    judge: Judge,
    fallback: Judge | None,
    items: Sequence[PanelItem],
    a: Sequence[SideText],
    b: Sequence[SideText],
) -> list[PairResult]:
    """One verdict per (headline, roll-out index) present on both sides, in panel order."""
    by_item = {item.headline.id: item for item in items}
    b_of = {(r.headline_id, r.index): r for r in b}
    pairs = [(by_item[r.headline_id], r, b_of[(r.headline_id, r.index)]) for r in a]
    if isinstance(judge, ScoringJudge):
        results = []
        for item, ra, rb in pairs:
            sa, sb = _scores(judge, item, ra.text, rb.text)
            results.append(
                PairResult(headline_id=ra.headline_id, index=ra.index, verdict=_decide(sa, sb), a_score=sa, b_score=sb)
            )
        return results
    rounds = []
    for item, ra, rb in pairs:
        headline, outcomes = item.headline.text, tuple(item.outcomes)
        for order, candidates in (("ab", (ra.text, rb.text)), ("ba", (rb.text, ra.text))):
            key = f"{item.headline.id}/{ra.index}/{order}"
            rounds.append(RoundRequest(key=key, headline=headline, outcomes=outcomes, candidates=candidates))
    answers = judge.pick(rounds)
    results = []
    for n, (item, ra, rb) in enumerate(pairs):
        first, second = answers[2 * n].choice, answers[2 * n + 1].choice
        if first is None or second is None:
            scores = _scores(fallback, item, ra.text, rb.text) if isinstance(fallback, ScoringJudge) else None
            results.append(
                PairResult(
                    headline_id=ra.headline_id,
                    index=ra.index,
                    verdict="tie" if scores is None else _decide(*scores),
                    a_score=None if scores is None else scores[0],
                    b_score=None if scores is None else scores[1],
                    judge_failed=True,
                )
            )
            continue
        winner_first = "a" if first == 0 else "b"
        winner_second = "b" if second == 0 else "a"
        agree = winner_first == winner_second
        results.append(
            PairResult(
                headline_id=ra.headline_id,
                index=ra.index,
                verdict=winner_first if agree else "tie",
                order_disagreement=not agree,
            )
        )
    return results


def leak_markers(cfg: VarroConfig) -> list[str]:
    """Fixed text of the prompt (template lines, system prompt sentences, chat tokens) an answer must not echo."""
    pieces = re.split(r"\{[a-z_]+\}|\n", cfg.generation.prompt_template)
    pieces += re.split(r"(?<=[.:!?])\s+", cfg.generation.system_prompt)
    markers = {p.strip().lower() for p in pieces if len(p.strip()) >= 12}
    return sorted(markers | {"<|im_start|>", "<|im_end|>", "<think>"})


def degenerate(text: str) -> bool:
    """Empty, or mostly one phrase over and over (over half of its word 3-grams repeat one seen before)."""
    words = text.lower().split()
    if not words:
        return True
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return len(grams) >= 10 and len(grams) - len(set(grams)) > len(grams) / 2


def side_metrics(texts: Sequence[SideText], scores: Sequence[float | None], markers: Sequence[str]) -> SideMetrics:
    n = len(texts)
    known = [s for s in scores if s is not None]
    return SideMetrics(
        rollouts=n,
        judge_score=sum(known) / len(known) if known and len(known) == len(scores) else None,
        structure=sum(structure_score(t.text) for t in texts) / n,
        tokens=sum(t.n_tokens for t in texts) / n,
        truncated=sum(t.truncated for t in texts) / n,
        leaked=sum(any(m in t.text.lower() for m in markers) for t in texts) / n,
        degenerate=sum(degenerate(t.text) for t in texts) / n,
    )
