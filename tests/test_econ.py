"""Economic metrics: predictions parsed into asset, direction and horizon, scored against closes."""

from __future__ import annotations

import msgspec
import pytest
from click.testing import CliRunner

from events.schema import RolloutGroup, RolloutSummary
from varro.econ import PriceFileError, Prices, evaluate, parse_horizon, parse_prediction

CSV = """# test prices
date,symbol,close
2025-01-02,XLE,100
2025-01-03,XLE,110
2025-01-06,XLE,99
2025-01-02,TLT,50
2025-01-03,TLT,45
2025-01-06,TLT,40
"""


def prediction(assets: str, rec: str, timeframe: str) -> str:
    return (
        f"Market Impact: x\nSpecific Assets: {assets}\nTrade Recommendation: {rec}\nTimeframe: {timeframe}\n"
        "Risk Factors: y\nWorld View: z"
    )


def test_a_price_file_is_read_strictly_and_its_errors_name_the_row():
    prices = Prices.read(CSV)
    assert prices.closes["XLE"]["2025-01-03"] == 110.0
    with pytest.raises(PriceFileError, match="header date,symbol,close"):
        Prices.read("day,ticker,px\n")
    with pytest.raises(PriceFileError, match="data row 3: close must be a positive number"):
        Prices.read("date,symbol,close\n2025-01-02,XLE,1\n2025-01-03,XLE,-4\n")
    with pytest.raises(PriceFileError, match="data row 3: a second close for XLE on 2025-01-02"):
        Prices.read("date,symbol,close\n2025-01-02,XLE,1\n2025-01-02,XLE,2\n")
    with pytest.raises(PriceFileError, match="data row 2"):
        Prices.read("date,symbol,close\n2025-13-40,XLE,1\n")


def test_predictions_parse_only_when_asset_direction_and_horizon_are_all_there():
    symbols = ["XLE", "TLT"]
    good = parse_prediction(
        prediction("Brent, XLE, airlines", "Go long XLE on pullbacks.", "One to three days"), symbols
    )
    assert (good.assets, good.direction, good.horizon, good.reason) == (("XLE",), 1, 1, None)
    short = parse_prediction(prediction("$TLT", "Sell duration.", "2 weeks"), symbols)
    assert (short.assets, short.direction, short.horizon) == (("TLT",), -1, 10)
    assert parse_prediction(prediction("XLEX", "Buy", "1 day"), symbols).reason == "no priced asset"
    assert parse_prediction(prediction("XLE", "Buy XLE, short TLT", "1 day"), symbols).reason == "mixed direction"
    assert parse_prediction(prediction("XLE", "Hold.", "1 day"), symbols).reason == "no direction"
    assert parse_prediction(prediction("XLE", "Buy", "until it works"), symbols).reason == "no horizon"
    assert (
        parse_prediction("Specific Assets: XLE\nTimeframe: 1 day", symbols).reason == "no Trade Recommendation section"
    )


@pytest.mark.parametrize(
    "text, days",
    [
        ("Two to six weeks", 10),
        ("1-3 months", 21),
        ("intraday", 1),
        ("a quarter", 63),
        ("next year", None),
        ("soon", None),
        ("0 days", None),
        ("3 trading days", 3),
    ],
)
def test_horizons_take_the_first_bound_in_trading_days(text, days):
    assert parse_horizon(text) == days


def _generated(sample_events, texts_by_date):
    base = sample_events("econ", "2025-01-02")["RolloutsGenerated"]
    out = []
    for date, texts in texts_by_date.items():
        rollouts = [
            RolloutSummary(index=i, seed=i, text=t, n_tokens=10, truncated=False, structure_score=1.0)
            for i, t in enumerate(texts)
        ]
        out.append(
            msgspec.structs.replace(
                base, date=date, groups=[RolloutGroup(headline_id="h1", prompt_tokens=3, rollouts=rollouts)]
            )
        )
    return out


def test_scored_predictions_give_hit_rates_and_a_paper_pnl_with_baselines(sample_events):
    events = _generated(
        sample_events,
        {
            "2025-01-02": [
                prediction("XLE", "Buy XLE", "1 day"),  # 100 -> 110: +10%, a hit
                prediction("TLT", "Short TLT", "2 days"),  # 50 -> 40: short earns +20%, a hit
                prediction("oil", "Buy", "1 day"),  # not parsed
            ],
            "2025-01-03": [
                prediction("XLE", "Buy XLE", "1 day"),  # 110 -> 99: -10%, a miss
                prediction("XLE", "Buy XLE", "2 weeks"),  # beyond the file: not yet due
            ],
        },
    )
    report = evaluate(events, Prices.read(CSV), resamples=200)
    assert (report.predictions, report.parsed, report.not_yet_due, report.scored) == (5, 4, 1, 3)
    assert report.unparsed == {"no priced asset": 1}
    assert report.hit_rate == pytest.approx(2 / 3)
    assert [(h.bucket, h.scored, h.hit_rate) for h in report.by_horizon] == [("1 day", 2, 0.5), ("≤ 1 week", 1, 1.0)]
    # equal weight within a day, then a mean over days: ((10% + 20%) / 2 - 10%) / 2
    assert report.pnl.value == pytest.approx(((0.10 + 0.20) / 2 - 0.10) / 2)
    assert report.always_long.value == pytest.approx(((0.10 - 0.20) / 2 - 0.10) / 2)
    assert report.days == 2 and report.pnl.low <= report.pnl.value <= report.pnl.high


def test_cli_reports_on_a_namespace_and_refuses_a_bad_price_file(sample_events, event_store, tmp_path, redis_server):
    from varro.cli import main

    store = event_store("econ")
    for name in ("DailyRunRequested", "HeadlinesFetched"):
        store.append(sample_events("econ", "2025-01-02")[name])
    [generated] = _generated(sample_events, {"2025-01-02": [prediction("XLE", "Buy XLE", "1 day")]})
    store.append(generated)
    prices = tmp_path / "p.csv"
    prices.write_text(CSV)
    common = ["--ns", "econ", "--redis-url", redis_server.url, "--data-dir", str(tmp_path)]
    out = CliRunner().invoke(main, ["econ", "--prices", str(prices), "--json", *common])
    assert out.exit_code == 0, out.output
    assert '"scored":1' in out.output and '"hit_rate":1.0' in out.output
    prices.write_text("date,symbol,close\n2025-01-02,XLE,abc\n")
    bad = CliRunner().invoke(main, ["econ", "--prices", str(prices), *common])
    assert bad.exit_code == 2 and "data row 2" in bad.output and "Traceback" not in bad.output
    sample = CliRunner().invoke(main, ["econ", "--prices", "sample", *common])
    assert sample.exit_code == 0 and "SYNTHETIC" in sample.output
