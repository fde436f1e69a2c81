"""The finance filter: whole words and phrases, tickers, moves; never substrings."""

import pytest

from varro.headlines.finance import finance_match

FINANCE = [
    "Fed holds rates steady, signals September cut",
    "Oil jumps 3% after OPEC+ signals slower output increases",
    "Apple (NASDAQ: AAPL) beats estimates as iPhone sales rise",
    "$TSLA slides after delivery miss",
    "ISM manufacturing index contracts for a fifth month",
    "Dow Jones closes at record as banks rally",
    "Bank of England cuts rates to 4% in split vote",
    "Treasury yields fall after Fed decision",
    "10-year yields climb 8 basis points after payrolls",
    "Bitcoin tops $120,000 for the first time",
    "Gold prices hit a record on rate-cut bets",
    "Shares of Nvidia jump 4% on AI demand",
    "Japan's Nikkei slides 2% as yen strengthens",
    "S&P 500 hits record high",
    "US imposes 25% tariff on Indian goods",
    "Microsoft stock falls 3% after cloud miss",
    "Euro zone inflation holds at 2%",
]

NOT_FINANCE = [
    "Terrorism charges filed after attack on train station",  # ism
    "Turmoil in parliament as coalition talks collapse",  # oil
    "Storm smashes shop window in city centre",  # dow
    "Prince shares photo of new baby",  # shares (the verb)
    "Search yields no survivors after landslide",  # yields (the verb)
    "West Bank clashes leave two dead",  # bank
    "Army stages military takeover in capital",  # takeover
    "Swimmer wins Olympic gold in record time",  # gold
    "Euro 2024: England reach the final",  # euro
    "Fed up parents protest school closures",  # Fed
    "Police rally support for new station",  # rally
    "Secretary general visits flood zone",  # sec
]


@pytest.mark.parametrize("text", FINANCE)
def test_strict_keeps_finance_news(text):
    assert finance_match(text, "strict") is not None


@pytest.mark.parametrize("text", NOT_FINANCE)
def test_strict_drops_general_news_that_only_contains_finance_substrings(text):
    assert finance_match(text, "strict") is None


def test_relaxed_adds_business_and_economy_news():
    economy = "UK retailers report weakest July sales growth in three years"
    amount = "Government unveils £2bn support package for steelmakers"
    assert finance_match(economy, "strict") is None and finance_match(amount, "strict") is None
    assert finance_match(economy, "relaxed") is not None
    assert finance_match(amount, "relaxed") is not None
    assert finance_match("Terrorism charges filed after attack", "relaxed") is None


def test_match_says_why():
    assert finance_match("$TSLA slides", "strict") == "ticker: $TSLA"
    assert finance_match("Measles vaccine maker climbs 12% on new order", "strict") == "move: climbs 12%"


def test_off_keeps_everything_and_bad_modes_are_refused():
    assert finance_match("Storm smashes shop window", "off") is not None
    with pytest.raises(ValueError, match="unknown finance filter mode 'loose'"):
        finance_match("Oil rises", "loose")
