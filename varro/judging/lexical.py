"""The lexical judge: a deterministic, dependency-free score of how well a
prediction matches the outcome headlines, for the demo, tests and fallback.

The score adds four parts, each in [0, 1]:

* topic (0.4): share of the prediction's distinct content words that appear in
  the outcome headlines (divided by at least 10, so a two-word prediction that
  hits one word does not beat a real one);
* tickers (0.2): share of the prediction's ticker-like symbols (``AAPL``,
  ``$TSLA``) that the outcomes mention;
* direction (0.2): 1 when the prediction's net direction (rise/fall words)
  agrees with the net direction of the outcome headlines it shares words with;
* structure (0.2): `varro.structure.structure_score`, the six-section format.

Empty text scores 0 on every part.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from varro.judging.base import RoundRequest, ScoringJudge
from varro.judging.text import content_words
from varro.structure import structure_score

UP = frozenset(
    [
        "rise",
        "rises",
        "rising",
        "rose",
        "rally",
        "rallies",
        "rallied",
        "gain",
        "gains",
        "gained",
        "up",
        "surge",
        "surges",
        "surged",
        "higher",
        "high",
        "bullish",
        "beat",
        "beats",
        "jump",
        "jumps",
        "jumped",
        "climb",
        "climbs",
        "climbed",
        "soar",
        "soars",
        "soared",
        "rebound",
        "rebounds",
        "boost",
        "boosts",
        "strong",
        "stronger",
        "upgrade",
        "upgraded",
        "outperform",
        "buy",
        "long",
        "record",
    ]
)
DOWN = frozenset(
    [
        "fall",
        "falls",
        "falling",
        "fell",
        "drop",
        "drops",
        "dropped",
        "decline",
        "declines",
        "declined",
        "down",
        "plunge",
        "plunges",
        "plunged",
        "lower",
        "low",
        "bearish",
        "miss",
        "misses",
        "missed",
        "slump",
        "slumps",
        "slumped",
        "slide",
        "slides",
        "slid",
        "sink",
        "sinks",
        "sank",
        "tumble",
        "tumbles",
        "tumbled",
        "weak",
        "weaker",
        "downgrade",
        "downgraded",
        "underperform",
        "sell",
        "short",
        "cut",
        "cuts",
        "loss",
        "losses",
    ]
)
WEIGHTS = {"topic": 0.4, "tickers": 0.2, "direction": 0.2, "structure": 0.2}

_TICKER = re.compile(r"(?<![A-Za-z0-9])\$?([A-Z]{2,5})(?![A-Za-z0-9])")


def tickers(text: str) -> set[str]:
    return set(_TICKER.findall(text))


def direction(words: Iterable[str]) -> int:
    """+1 when rise words outnumber fall words, -1 for the reverse, 0 otherwise."""
    net = 0
    for word in words:
        net += (word in UP) - (word in DOWN)
    return (net > 0) - (net < 0)


@lru_cache(maxsize=8)
def _outcome_index(outcomes: tuple[str, ...]) -> tuple[list[frozenset[str]], frozenset[str], frozenset[str]]:
    """Per-day work done once: each outcome's content words, all of them, all tickers."""
    outcome_words = [frozenset(content_words(o)) for o in outcomes]
    vocabulary = frozenset().union(*outcome_words)
    mentioned = frozenset().union(*(tickers(o) for o in outcomes))
    return outcome_words, vocabulary, mentioned


def lexical_parts(text: str, outcomes: tuple[str, ...]) -> dict[str, float]:
    """The four parts of the lexical score for one prediction."""
    outcome_words, vocabulary, mentioned = _outcome_index(outcomes)
    mine = set(content_words(text))
    topic = len(mine & vocabulary) / max(len(mine), 10)
    symbols = tickers(text)
    ticker_share = len(symbols & mentioned) / len(symbols) if symbols else 0.0
    topical = mine - UP - DOWN
    related = [w for ws in outcome_words if ws & topical for w in ws]
    mine_dir = direction(mine)
    agrees = float(mine_dir != 0 and mine_dir == direction(related))
    return {"topic": topic, "tickers": ticker_share, "direction": agrees, "structure": structure_score(text)}


def lexical_score(text: str, outcomes: tuple[str, ...]) -> float:
    parts = lexical_parts(text, outcomes)
    return sum(WEIGHTS[name] * value for name, value in parts.items())


class LexicalJudge(ScoringJudge):
    name = "lexical"

    def score(self, request: RoundRequest) -> list[float]:
        return [lexical_score(text, request.outcomes) for text in request.candidates]
