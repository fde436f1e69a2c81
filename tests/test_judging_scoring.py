"""Outcome matching and the two scoring judges (lexical, TF-IDF)."""

import numpy as np
import pytest

from events.schema import Headline
from varro.judging import NoOutcomes, RoundRequest, outcome_date_for, outcome_headlines
from varro.judging.lexical import LexicalJudge, lexical_parts, lexical_score
from varro.judging.outcomes import require_outcomes
from varro.judging.semantic import SemanticJudge, TfidfIndex

OUTCOMES = (
    "Oil prices surge after OPEC agrees deeper output cuts",
    "Apple AAPL shares fall as iPhone sales disappoint",
    "Federal Reserve holds interest rates steady",
    "Gold climbs to record high on safe-haven demand",
)
GOOD = (
    "Market Impact: OPEC output cuts push oil prices higher.\nSpecific Assets: Brent crude, XLE\n"
    "Trade Recommendation: buy oil futures\nTimeframe: 1 week\nRisk Factors: demand\nWorld View: tight supply"
)


def h(hid, text):
    return Headline(id=hid, text=text, source="test")


def test_outcome_date_defaults_to_the_next_day_and_accepts_an_override():
    assert outcome_date_for("2025-03-31") == "2025-04-01"
    assert outcome_date_for("2025-03-31", "2025-04-07") == "2025-04-07"
    with pytest.raises(ValueError, match="invalid date"):
        outcome_date_for("2025-03-31", "04/07/2025")


def test_the_prediction_days_own_headlines_are_not_outcomes():
    today = [h("a", "Oil prices surge!"), h("b", "Gold flat")]
    tomorrow = [
        h("a", "renamed but same id"),
        h("c", "oil  PRICES surge"),
        h("d", "Stocks rally"),
        h("e", "Stocks rally."),
        h("f", "Bonds slip"),
    ]
    assert [x.id for x in outcome_headlines(tomorrow, today)] == ["d", "f"]
    with pytest.raises(NoOutcomes, match="nothing to judge"):
        require_outcomes(outcome_headlines(today, today), "2025-01-02", "2025-01-01")


def test_tfidf_scores_empty_and_stopword_text_lowest_not_highest():
    index = TfidfIndex(OUTCOMES)
    scores = {
        text: index.score(text)
        for text in ["", "the and of", "   ", GOOD, "Gold climbs on safe-haven demand", "banana bread recipe"]
    }
    assert scores[""] == 0.0 and scores["the and of"] == 0.0 and scores["   "] == 0.0
    assert scores[GOOD] > 0.1 and scores["Gold climbs on safe-haven demand"] > 0.1
    assert scores["banana bread recipe"] == 0.0
    assert max(scores.values()) < 1.0
    assert len({round(v, 6) for v in scores.values()}) > 2  # not a constant score (the original's 0.93)


def test_tfidf_vectors_follow_the_standard_formula():
    index = TfidfIndex(["oil oil gold", "gold"])
    terms = sorted(index.vocabulary)
    assert terms == ["gold", "oil"]
    idf = np.log(3 / np.array([3.0, 2.0])) + 1
    expected = np.array([1.0, 1 + np.log(2)]) * idf
    assert index.outcomes[0] == pytest.approx(expected / np.linalg.norm(expected))
    assert index.score("oil oil gold") == pytest.approx((1.0 + float(index.outcomes[0] @ index.outcomes[1])) / 2)
    diluted = index.score("oil oil gold " + "zebra " * 5)
    assert 0 < diluted < index.score("oil oil gold")


def test_semantic_judge_ranks_a_matching_prediction_first_and_empty_last():
    request = RoundRequest(
        key="g",
        headline="OPEC meets",
        outcomes=OUTCOMES,
        candidates=("", "banana bread", GOOD, "sunny weather tomorrow"),
    )
    [answer] = SemanticJudge().pick([request])
    assert answer.choice == 2
    assert answer.scores[0] == 0.0 and answer.scores[0] == min(answer.scores)


def test_lexical_parts_and_judge():
    parts = lexical_parts(GOOD, OUTCOMES)
    assert parts["structure"] == 1.0 and parts["direction"] == 1.0 and parts["topic"] > 0
    assert lexical_parts("AAPL will drop sharply", OUTCOMES)["tickers"] == 1.0
    assert lexical_parts("AAPL will rise sharply", OUTCOMES)["direction"] == 0.0
    assert lexical_parts("AAPL will drop sharply", OUTCOMES)["direction"] == 1.0
    assert lexical_score("", OUTCOMES) == 0.0
    assert lexical_score(GOOD, OUTCOMES) == lexical_score(GOOD, OUTCOMES)
    request = RoundRequest(key="g", headline="x", outcomes=OUTCOMES, candidates=("nothing relevant here", GOOD, ""))
    [answer] = LexicalJudge().pick([request])
    assert answer.choice == 1 and answer.scores[2] == 0.0
    assert answer.raw.split()[1] == f"{lexical_score(GOOD, OUTCOMES):.6g}"
