"""What every judge takes and answers: one round of one group at a time, many at once.

A round shows the remaining candidates of one group in a shuffled order with
letters A, B, ... and asks for the single best given the outcome headlines. A
judge gets the rounds of *all* groups of the day in one call so that a model
judge can answer them with one batched forward pass.
"""

from __future__ import annotations

import abc
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from events.errors import VarroError

LETTERS = string.ascii_uppercase


class JudgeError(VarroError, RuntimeError):
    """The judge cannot work as configured (bad model, tokenizer or request)."""


class JudgeFailed(JudgeError):
    """A group could not be ranked: the judge gave up and no fallback was configured."""


@dataclass(frozen=True)
class RoundRequest:
    """One round of one group: candidates' texts in shown order (letter i = LETTERS[i])."""

    key: str
    headline: str
    outcomes: tuple[str, ...]
    candidates: tuple[str, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.candidates) <= len(LETTERS):
            raise JudgeError(
                f"group {self.key}: a round shows 1 to {len(LETTERS)} candidates, got {len(self.candidates)}"
            )

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.candidates)]


@dataclass(frozen=True)
class RoundAnswer:
    """A judge's answer to one round.

    `choice` is the shown position picked (None when the judge gave up after
    its retries; `error` says why). `scores` are the judge's raw, unscaled
    signals per shown position where it has them (log-probabilities of the
    letters, similarity scores).
    """

    choice: int | None
    raw: str = ""
    retries: int = 0
    scores: tuple[float, ...] | None = None
    error: str | None = None


class Judge(Protocol):
    name: str

    def pick(self, rounds: Sequence[RoundRequest]) -> list[RoundAnswer]: ...


def best_position(scores: Sequence[float]) -> int:
    """Highest score; a tie goes to the earlier shown position (the order is shuffled per round)."""
    best = 0
    for position, score in enumerate(scores):
        if score > scores[best]:
            best = position
    return best


class ScoringJudge(abc.ABC):
    """A judge that scores each candidate on its own and picks the highest.

    Scores do not depend on which other candidates are shown, so the rounds
    reproduce a sort by score and the round-1 scores are the raw signal.
    """

    name = "scoring"

    @abc.abstractmethod
    def score(self, request: RoundRequest) -> list[float]:
        """One raw score per shown candidate, higher is better."""

    def pick(self, rounds: Sequence[RoundRequest]) -> list[RoundAnswer]:
        answers = []
        for request in rounds:
            scores = self.score(request)
            answers.append(
                RoundAnswer(
                    choice=best_position(scores),
                    raw=" ".join(f"{s:.6g}" for s in scores),
                    scores=tuple(scores),
                )
            )
        return answers
