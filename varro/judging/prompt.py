"""The question a language-model judge is asked in each round.

The text is split in two so a local model can reuse work: the `shared` part
(instruction and outcome headlines) is the same for every group and round of a
day; the `round` part (the group's headline, the lettered candidates and the
question) changes every round.
"""

from __future__ import annotations

from dataclasses import dataclass

from varro.judging.base import RoundRequest

INSTRUCTION = (
    "You judge trading predictions against what actually happened. Each prediction was written "
    "about one news headline; the headlines below were published afterwards and are the outcome. "
    "Pick the single prediction that best anticipated the outcome: the right assets, the right "
    "direction, a plausible timeframe, a clear recommendation. Answer with one letter only."
)


@dataclass(frozen=True)
class JudgePrompt:
    """Prompt limits: a day can have many outcome headlines and long roll-outs."""

    max_outcomes: int = 64
    candidate_chars: int = 1200

    def outcome_block(self, outcomes: tuple[str, ...]) -> str:
        lines = "\n".join(f"- {text}" for text in outcomes[: self.max_outcomes])
        return f"Outcome headlines:\n{lines}\n\n"

    def shared(self, outcomes: tuple[str, ...]) -> str:
        return f"{INSTRUCTION}\n\n{self.outcome_block(outcomes)}"

    def round(self, request: RoundRequest) -> str:
        shown = "\n\n".join(
            f"{letter}: {_clip(text, self.candidate_chars)}"
            for letter, text in zip(request.letters, request.candidates, strict=True)
        )
        choices = ", ".join(request.letters)
        return (
            f"Headline the predictions were written about: {request.headline}\n\n"
            f"Predictions:\n\n{shown}\n\n"
            f"Which prediction best anticipated the outcome? Answer with one letter ({choices})."
        )

    def messages(self, request: RoundRequest) -> list[dict[str, str]]:
        """Chat messages for an OpenAI-compatible server."""
        return [
            {"role": "system", "content": INSTRUCTION},
            {"role": "user", "content": self.outcome_block(request.outcomes) + self.round(request)},
        ]


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
