"""The structure score: six sections, recognised however they are dressed, and only as headings."""

import pytest

from varro.structure import SECTIONS, sections_present, structure_score

PLAIN = """Market Impact: Yields fall.
Specific Assets: TLT, gold.
Trade Recommendation: Buy TLT.
Timeframe: Two weeks.
Risk Factors: Hot CPI.
World View: Easing cycle."""


@pytest.mark.parametrize(
    "text",
    [
        PLAIN,
        "\n".join(f"**{s}:** text" for s in SECTIONS),
        "\n".join(f"**{s}**: text" for s in SECTIONS),
        "\n".join(f"## {s}\ntext" for s in SECTIONS),
        "\n".join(f"### {s.upper()}\ntext" for s in SECTIONS),
        "\n".join(f"{i}. {s} - text" for i, s in enumerate(SECTIONS, 1)),
        "\n".join(f"{i}) **{s.lower()}** — text" for i, s in enumerate(SECTIONS, 1)),
        "\n".join(f"- {s}: text" for s in SECTIONS),
        PLAIN.replace("Timeframe", "Time frame"),
        PLAIN.replace("Timeframe", "Time-Frame"),
    ],
)
def test_all_sections_in_any_common_dress(text):
    assert structure_score(text) == 1.0


def test_partial_predictions_score_the_fraction_present():
    assert structure_score("Market Impact: up.\nWorld View: calm.") == pytest.approx(2 / 6)
    assert structure_score("") == 0.0
    assert sections_present("risk factors: many\nMARKET IMPACT - small") == ["Market Impact", "Risk Factors"]


@pytest.mark.parametrize(
    "near_miss",
    [
        "Market Impacts: up",  # plural is not the heading
        "Market: up",  # partial name
        "Risk: high",
        "The market impact is small and the world view is calm.",  # mentioned, not a heading
        "Trade Recommendations: buy",
        "World Viewpoint: calm",
        "Specific Asset: TLT",
        "Timeframes: weeks",
    ],
)
def test_near_misses_do_not_count(near_miss):
    assert structure_score(near_miss) == 0.0


def test_each_section_counts_once_even_if_repeated():
    assert structure_score(PLAIN + "\n" + PLAIN) == 1.0
    assert structure_score("Market Impact: a\nMarket Impact: b") == pytest.approx(1 / 6)
