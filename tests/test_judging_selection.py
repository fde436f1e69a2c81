"""The iterative selection: rounds, shuffles, batching across groups, fallback, day stats."""

import pytest

from events.schema import RankedGroup
from varro.judging import JudgeFailed, LexicalJudge, RoundAnswer, rank_day, rank_groups
from varro.judging.selection import NO_JUDGE, GroupToRank, shown_order
from varro.judging.stats import position_pick_rates, spearman

OUTCOMES = ("Oil prices surge as OPEC cuts output", "Tech stocks fall on rate fears")


def group(hid: str, size: int) -> GroupToRank:
    return GroupToRank(headline_id=hid, headline=f"headline {hid}", texts=tuple(f"r{i}" for i in range(size)))


class LowestIndexJudge:
    """Picks the roll-out with the lowest index among those shown; logs every call."""

    name = "lowest"

    def __init__(self):
        self.calls = []

    def pick(self, rounds):
        self.calls.append(rounds)
        return [
            RoundAnswer(
                choice=r.candidates.index(min(r.candidates, key=lambda t: int(t[1:]))),
                raw="x",
                scores=tuple(-float(t[1:]) for t in r.candidates),
            )
            for r in rounds
        ]


class FirstShownJudge:
    name = "first"

    def pick(self, rounds):
        return [RoundAnswer(choice=0, raw="A") for _ in rounds]


class GivesUpJudge:
    """Like LowestIndexJudge, but gives up on group `bad` in its second round."""

    name = "flaky"

    def __init__(self, bad):
        self.bad, self.seen = bad, 0

    def pick(self, rounds):
        out = []
        for r in rounds:
            if r.key == self.bad:
                self.seen += 1
                if self.seen == 2:
                    out.append(RoundAnswer(choice=None, raw="???", retries=3, error="4 attempts failed"))
                    continue
                out.append(RoundAnswer(choice=0, raw="A", retries=1))
            else:
                out.append(RoundAnswer(choice=0, raw="A"))
        return out


def test_rounds_rank_in_pick_order_and_record_what_was_shown():
    judge = LowestIndexJudge()
    [ranked] = rank_groups([group("h1", 8)], OUTCOMES, judge, None, seed=7)
    assert ranked.ranks == [1, 2, 3, 4, 5, 6, 7, 8]
    assert ranked.rewards == pytest.approx([1 - k / 7 for k in range(8)])
    assert len(ranked.rounds) == 7
    for r, rnd in enumerate(ranked.rounds):
        assert sorted(rnd.shown) == list(range(r, 8))
        assert rnd.pick == r
        assert rnd.shown == shown_order(range(r, 8), 7, "h1", r)
    assert ranked.raw_scores == [-float(i) for i in range(8)]
    assert ranked.judge == "lowest" and ranked.fallback_reason is None


def test_shown_order_is_a_seeded_shuffle_that_varies_by_round_and_reverses_exactly():
    first = shown_order(range(8), 1234, "h1", 0)
    assert first == shown_order(range(8), 1234, "h1", 0)
    assert sorted(first) == list(range(8))
    assert first != list(range(8))
    assert first != shown_order(range(8), 1235, "h1", 0)
    assert first != shown_order(range(8), 1234, "h2", 0)
    assert first != shown_order(range(8), 1234, "h1", 1)
    assert shown_order(range(8), 1234, "h1", 0, reverse=True) == first[::-1]


def test_one_judge_call_per_round_across_all_groups_of_any_size():
    judge = LowestIndexJudge()
    groups = [group("a", 8), group("b", 3), group("c", 1), group("d", 0), group("e", 8)]
    ranked = rank_groups(groups, OUTCOMES, judge, None, seed=1)
    assert [len(call) for call in judge.calls] == [3, 3, 2, 2, 2, 2, 2]
    assert [g.headline_id for g in ranked] == ["a", "b", "c", "d", "e"]
    assert ranked[1].ranks == [1, 2, 3] and ranked[1].rewards == [1.0, 0.5, 0.0]
    assert ranked[2].ranks == [1] and ranked[2].rewards == [0.5] and ranked[2].judge == NO_JUDGE
    assert ranked[3].ranks == [] and ranked[3].judge == NO_JUDGE


def test_a_group_the_judge_gives_up_on_is_ranked_by_the_fallback_and_recorded():
    groups = [group("good", 8), group("bad", 8)]
    ranked = rank_groups(groups, OUTCOMES, GivesUpJudge("bad"), LowestIndexJudge(), seed=3)
    good, bad = ranked
    assert good.judge == "flaky" and good.fallback_reason is None and good.failed_rounds == []
    assert bad.judge == "lowest"
    assert "flaky gave no valid pick in round 2" in bad.fallback_reason
    assert "4 attempts failed" in bad.fallback_reason
    assert [r.pick is None for r in bad.failed_rounds] == [False, True]
    assert bad.failed_rounds[1].raw == "???"
    assert bad.retries == 1 + 3
    assert bad.ranks == [1, 2, 3, 4, 5, 6, 7, 8] and len(bad.rounds) == 7


def test_without_a_fallback_a_failed_group_is_an_error_not_a_padded_ranking():
    with pytest.raises(JudgeFailed, match=r"bad.*no valid pick in round 2|no fallback"):
        rank_groups([group("bad", 8)], OUTCOMES, GivesUpJudge("bad"), None, seed=3)


def test_a_judge_answering_the_wrong_number_of_rounds_is_refused():
    class Mute:
        name = "mute"

        def pick(self, rounds):
            return []

    with pytest.raises(JudgeFailed, match="answered 0 of 1"):
        rank_groups([group("a", 4)], OUTCOMES, Mute(), None, seed=0)


def test_position_bias_is_measured_against_chance():
    ranked = rank_groups([group(f"h{i}", 8) for i in range(5)], OUTCOMES, FirstShownJudge(), None, seed=0)
    rates, chance = position_pick_rates(ranked, "first")
    assert rates == [1.0] + [0.0] * 7
    assert chance[0] == pytest.approx(sum(1 / m for m in range(2, 9)) / 7)
    assert chance[7] == pytest.approx(1 / 8)


def test_day_stats_and_reversed_order_agreement():
    groups = [
        GroupToRank(
            headline_id=f"h{i}",
            headline="oil",
            texts=tuple(" ".join(["oil", "prices", "surge", "opec", "cuts", "output"][:k]) for k in range(6)),
        )
        for i in range(6)
    ]
    day = rank_day(groups, OUTCOMES, LexicalJudge(), None, seed=11, agreement_groups=4)
    stats = day.stats
    assert stats.groups == 6 and stats.n == 36 and stats.negatives == 0
    assert stats.avg == pytest.approx(0.5) and stats.min == 0.0 and stats.max == 1.0
    assert stats.primary_share == 1.0
    assert stats.agreement_groups == 4 and stats.agreement == pytest.approx(1.0)
    biased = rank_day(groups, OUTCOMES, FirstShownJudge(), None, seed=11, agreement_groups=3)
    assert biased.stats.agreement_groups == 3 and biased.stats.agreement < 0.5


def test_spearman():
    assert spearman([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 7, 7], [1, 2, 3, 4]) == pytest.approx(0.9486833)
    assert spearman([7, 7, 7], [1, 2, 3]) is None


def test_ranked_group_round_trips_through_the_event_codec():
    import msgspec

    [ranked] = rank_groups([group("h", 5)], OUTCOMES, LowestIndexJudge(), None, seed=2)
    assert msgspec.json.decode(msgspec.json.encode(ranked), type=RankedGroup) == ranked
