"""Held-out panels, clustered intervals and head-to-head judging, without a model."""

from __future__ import annotations

import msgspec
import pytest

from events.schema import Headline
from varro.config import VarroConfig
from varro.evaluation import panel as panels
from varro.evaluation.compare import SideText, degenerate, judge_pairs, leak_markers, side_metrics
from varro.evaluation.exclusion import PanelLeak, check_held_out, trained_headlines
from varro.evaluation.stats import clustered, outcome_value
from varro.judging.base import RoundAnswer
from varro.judging.structure_judge import StructureJudge

GOOD = (  # the six sections, one a line: structure score 1
    "Market Impact: up.\nSpecific Assets: AAPL.\nTrade Recommendation: buy.\nTimeframe: 1w.\n"
    "Risk Factors: rates.\nWorld View: calm."
)
POOR = "Market Impact: up."


def _headline(i: int) -> Headline:
    return Headline(id=f"h{i:04d}", text=f"Headline number {i} about oil", source="test")


def test_hold_out_is_a_stable_share_of_ids_and_never_empties_a_day():
    ids = [f"h{i:04d}" for i in range(4000)]
    share = sum(panels.held_out(i, 0.125) for i in ids) / len(ids)
    assert 0.10 < share < 0.15
    assert [panels.held_out(i, 0.125) for i in ids[:50]] == [panels.held_out(i, 0.125) for i in ids[:50]]
    assert not any(panels.held_out(i, 0.0) for i in ids)
    day = [_headline(i) for i in range(64)]
    kept = panels.training_headlines(day, 0.125)
    assert 0 < len(kept) < 64 and not any(panels.held_out(h.id, 0.125) for h in kept)
    [alone] = [h for h in day if panels.held_out(h.id, 0.125)][:1]
    assert panels.training_headlines([alone], 0.125) == [alone]  # a day is never left with nothing


def test_panel_pairs_each_held_out_headline_with_the_next_day_once():
    days = {
        "2025-01-01": [_headline(i) for i in range(40)],
        "2025-01-02": [_headline(i) for i in range(30, 70)],  # ten stories carry over from the day before
        "2025-01-03": [_headline(i) for i in range(70, 110)],  # no next day: not on the panel
    }
    panel = panels.build_panel(days, share=0.125, name="t")
    held = [h.id for d in ("2025-01-01", "2025-01-02") for h in days[d] if panels.held_out(h.id, 0.125)]
    assert [item.headline.id for item in panel.items] == list(dict.fromkeys(held))  # recurring stories once
    first = panel.items[0]
    assert first.date == "2025-01-01" and first.outcome_date == "2025-01-02"
    # the outcome day's texts, without the stories already known on the item's own day
    assert first.outcomes == [h.text for h in days["2025-01-02"] if h.id not in {x.id for x in days["2025-01-01"]}]
    assert panels.decode(panels.encode(panel)) == panel
    with pytest.raises(panels.PanelError, match="holdout_share is 0"):
        panels.build_panel(days, share=0.0, name="t")
    with pytest.raises(panels.PanelError, match="needs consecutive days"):
        panels.build_panel({"2025-01-03": days["2025-01-03"]}, share=0.125, name="t")
    with pytest.raises(panels.PanelError, match="not a Varro panel"):
        panels.decode(b'{"items": 3}', origin="x.json")


def test_the_bundled_sample_has_a_panel_that_generation_never_uses():
    from varro.config import HeadlinesConfig
    from varro.headlines.collect import collect, sample_dates

    days = {d: collect("sample", d, HeadlinesConfig()).headlines for d in sample_dates()}
    panel = panels.build_panel(days, share=0.125, name="sample")
    assert len(panel.items) >= 30 and len(panel.dates) == len(sample_dates()) - 1
    ids = {item.headline.id for item in panel.items}
    for day in days.values():
        assert not ids & {h.id for h in panels.training_headlines(day, 0.125)}


def test_clustered_interval_resamples_headlines_and_is_reproducible():
    same = clustered({"a": [1.0, 1.0], "b": [1.0, 1.0]}, resamples=500, seed=1)
    assert (same.value, same.low, same.high, same.clusters) == (1.0, 1.0, 1.0, 2)
    spread = {f"h{i}": [float(i % 2)] * 4 for i in range(40)}  # half the headlines won, half lost
    est = clustered(spread, resamples=2000, seed=7)
    assert est.value == 0.5 and est.low < 0.5 < est.high and not est.excludes(0.5)
    assert est == clustered(spread, resamples=2000, seed=7)
    # many pairs on few headlines give a wide interval: the headline is the unit, not the pair
    few = clustered({"x": [1.0] * 50, "y": [0.0] * 50, "z": [1.0] * 50}, resamples=2000, seed=7)
    assert few.high - few.low > 0.5
    assert [outcome_value(v) for v in ("b", "tie", "a")] == [1.0, 0.5, 0.0]


def _items(n: int) -> list[panels.PanelItem]:
    return [
        panels.PanelItem(date="2025-01-01", headline=_headline(i), outcome_date="2025-01-02", outcomes=["Oil rises"])
        for i in range(n)
    ]


def _side(texts: dict[tuple[int, int], str]) -> list[SideText]:
    return [
        SideText(headline_id=f"h{h:04d}", index=i, seed=i, text=t, n_tokens=len(t.split()), truncated=False)
        for (h, i), t in sorted(texts.items())
    ]


def test_a_scoring_judge_compares_scores_and_ties_equal_ones():
    a = _side({(0, 0): POOR, (0, 1): GOOD, (1, 0): GOOD})
    b = _side({(0, 0): GOOD, (0, 1): GOOD, (1, 0): POOR})
    results = judge_pairs(StructureJudge(), None, _items(2), a, b)
    assert [r.verdict for r in results] == ["b", "tie", "a"]
    assert results[0].a_score == pytest.approx(1 / 6) and results[0].b_score == 1.0


class _PositionBiased:
    """Always answers the first letter: what a position-biased LLM judge does."""

    name = "biased"

    def pick(self, rounds):
        return [RoundAnswer(choice=0, raw="A") for _ in rounds]


class _Structure:
    """A picking judge that prefers the better-structured answer, and gives up on one headline."""

    name = "picky"

    def pick(self, rounds):
        out = []
        for r in rounds:
            if r.key.startswith("h0001"):
                out.append(RoundAnswer(choice=None, error="no valid letter"))
                continue
            scores = StructureJudge().score(r)
            out.append(RoundAnswer(choice=int(scores[1] > scores[0]), raw="AB"[int(scores[1] > scores[0])]))
        return out


def test_a_picking_judge_is_asked_in_both_orders_and_disagreement_is_a_tie():
    a = _side({(0, 0): POOR, (0, 1): GOOD})
    b = _side({(0, 0): GOOD, (0, 1): POOR})
    biased = judge_pairs(_PositionBiased(), None, _items(1), a, b)
    assert [r.verdict for r in biased] == ["tie", "tie"] and all(r.order_disagreement for r in biased)
    fair = judge_pairs(_Structure(), StructureJudge(), _items(2), a + _side({(1, 0): POOR}), b + _side({(1, 0): GOOD}))
    assert [r.verdict for r in fair] == ["b", "a", "b"]
    assert [r.judge_failed for r in fair] == [False, False, True]  # h0001 decided by the fallback's scores
    assert not any(r.order_disagreement for r in fair)


def test_side_metrics_count_leaks_truncation_and_degenerate_answers():
    cfg = VarroConfig()
    markers = leak_markers(cfg)
    assert "write the prediction." in markers and "<|im_start|>" in markers
    texts = [
        SideText(headline_id="h", index=0, seed=0, text=GOOD, n_tokens=30, truncated=False),
        SideText(headline_id="h", index=1, seed=1, text="Write the prediction. " + GOOD, n_tokens=40, truncated=True),
        SideText(headline_id="h", index=2, seed=2, text="to to to " * 20, n_tokens=60, truncated=True),
        SideText(headline_id="h", index=3, seed=3, text="  ", n_tokens=1, truncated=False),
    ]
    m = side_metrics(texts, [1.0, 0.5, 0.0, 0.0], markers)
    assert (m.leaked, m.truncated, m.degenerate, m.tokens) == (0.25, 0.5, 0.5, 32.75)
    assert m.judge_score == pytest.approx(0.375)
    assert side_metrics(texts, [1.0, None, 0.0, 0.0], markers).judge_score is None
    assert not degenerate(GOOD) and degenerate("")


def test_a_checkpoint_trained_on_a_panel_headline_is_refused(sample_events):
    events = list(sample_events("ex", "2025-01-02").values())
    trained = next(e for e in events if type(e).__name__ == "EpochTrained")
    fetched = next(e for e in events if type(e).__name__ == "HeadlinesFetched")
    assert trained_headlines(events, trained.checkpoint.sha256) == {"h1": "2025-01-02"}
    assert trained_headlines(events, trained.parent_checkpoint.sha256) == {}  # the base trained on nothing
    leaky = panels.Panel(
        name="p",
        holdout_share=0.125,
        items=[
            panels.PanelItem(
                date="2025-01-02", headline=fetched.headlines[0], outcome_date="2025-01-03", outcomes=["x"]
            )
        ],
    )
    with pytest.raises(PanelLeak, match="was trained on panel headline 'Fed holds rates steady; dollar rises'"):
        check_held_out(events, leaky, trained.checkpoint.sha256, "2025-01-02")
    check_held_out(events, leaky, trained.parent_checkpoint.sha256, "base")  # no error
    clean = msgspec.structs.replace(leaky, items=[msgspec.structs.replace(leaky.items[0], headline=_headline(9))])
    check_held_out(events, clean, trained.checkpoint.sha256, "2025-01-02")
