"""Is a general-news headline about finance? Whole words and phrases only.

Matching substrings is how the original let "terrorism" (ism), "turmoil" (oil)
and "window" (dow) through; every term here is bounded by word edges. Acronyms
are case-sensitive ("Fed", "ISM", "SEC") so "fed up" and "sec" stay out.

`strict` keeps headlines with market vocabulary, tickers, basis points or a
percentage *move*; `relaxed` also keeps business and economy words and any
percentage or money amount; `off` keeps everything.
"""

from __future__ import annotations

import re
from typing import Literal

FilterMode = Literal["strict", "relaxed", "off"]

_MOVE = (
    r"(?:rises?|rose|falls?|fell|jumps?|jumped|slides?|slid|surges?|surged|plunges?|plunged|gains?|gained"
    r"|drops?|dropped|tumbles?|tumbled|soars?|soared|sinks?|sank|climbs?|climbed|rallies|rallied|slumps?"
    r"|slumped|sheds?|adds?|added|up|down|higher|lower|lost|loses?)"
)

_STRICT_WORDS = r"""
stocks stock\ (?:market|markets|exchange|prices?|index|indexes|indices|futures|split|sale|{move})
shares\ (?:of|in|{move}) share\ (?:prices?|sale|buyback) equities private\ equity
bond\ (?:market|markets|yields?|sale|prices?|issue) (?:government|corporate|junk)\ bonds?
(?:bond|treasury|gilt|\d+-year)\ yields? treasur(?:y|ies) gilts bunds
(?:interest|mortgage|policy|exchange)\ rates? rate\ (?:cuts?|hikes?|rises?|decision)
central\ banks? federal\ reserve wall\ street bank\ of\ (?:england|japan|canada|korea)
(?:cuts?|raises?|hikes?|holds?|keeps?|lowers?)\ (?:interest\ )?rates
inflation deflation stagflation recession payrolls? jobless\ claims unemployment\ rate
earnings revenues? profits? quarterly\ results (?:profit|earnings|revenue|sales)\ (?:guidance|forecast|warning)
dividends? buybacks? initial\ public\ offering mergers? acquisitions? takeover\ (?:bid|offer|deal)
buyout bankruptcy chapter\ 11 investors? traders? hedge\ funds? asset\ managers? brokerages? lenders?
nasdaq dow\ jones the\ dow s&p(?:\ 500)? russell\ 2000 ftse dax cac\ 40 nikkei hang\ seng
stoxx sensex kospi commodit(?:y|ies) crude brent oil(?:\ prices?)? opec\+?
natural\ gas gold\ (?:prices?|futures) bullion silver\ prices? copper platinum wheat soybeans iron\ ore
dollar the\ euro euro\ (?:zone|area) eurozone yen yuan renminbi sterling rupee forex currenc(?:y|ies)
devaluation bitcoin ether(?:eum)? crypto(?:currency|currencies)? stablecoins? blockchain
tariffs? trade\ (?:war|deal|deficit|surplus) sanctions\ on\ (?:oil|banks|exports)
market\ (?:cap|value|rally|selloff|sell-off|rout|close|open) sell-?off bull\ market bear\ market
""".replace("{move}", _MOVE)

_STRICT_ACRONYMS = r"""
Fed(?!\ up\b) FOMC ECB BoE BOE BoJ BOJ PBOC PBoC RBA RBI SNB SEC CFTC IMF OPEC\+? GDP CPI PPI PCE PMI ISM
IPOs? ETFs? FX M&A EPS WTI NYSE TSX
"""

_RELAXED_WORDS = r"""
economy economic economies economists? business(?:es)? compan(?:y|ies) corporate firms?
industry industries manufacturing factory factories retail(?:ers)? consumers? spending
prices? costs? wages? jobs hiring layoffs? budget deficit debt taxes? subsid(?:y|ies)
exports? imports? trade (?<!west\ )banks? banking financ(?:e|ial|ing) funds? investments? deals?
housing\ market home\ sales startups? valuations? billionaires? shares stock
"""

_NUMBER = r"\d+(?:[.,]\d+)?"
_PERCENT = rf"{_NUMBER}\s?(?:%|percent\b|per\ cent\b)"

_TICKER = re.compile(
    r"(?<![\w$])\$[A-Z]{1,5}(?:\.[A-Z])?\b"
    r"|\((?:NYSE|NASDAQ|Nasdaq|NYSEARCA|NYSEAMERICAN|AMEX|LSE|TSX|OTC|HKEX|ASX)\s?:\s?[A-Z][A-Z.]{0,6}\)"
)


def _words(terms: str, flags: int = re.IGNORECASE | re.VERBOSE) -> re.Pattern[str]:
    """One pattern from whitespace-separated terms (an escaped space stays inside a term)."""
    alternatives = re.split(r"(?<!\\)\s+", terms.strip())
    return re.compile(r"(?<![\w&])(?:" + "|".join(alternatives) + r")(?![\w&])", flags)


_STRICT = [
    ("word", _words(_STRICT_WORDS)),
    ("acronym", _words(_STRICT_ACRONYMS, flags=re.VERBOSE)),
    ("ticker", _TICKER),
    ("basis points", re.compile(rf"\b{_NUMBER}\s?(?:bps|bp|basis\ points?)\b", re.IGNORECASE | re.VERBOSE)),
    ("move", re.compile(rf"\b{_MOVE}\s+(?:by\s+)?{_PERCENT}|(?<!\w)[+-]{_PERCENT}", re.IGNORECASE | re.VERBOSE)),
]
_RELAXED = [
    ("word", _words(_RELAXED_WORDS)),
    ("percent", re.compile(rf"\b{_PERCENT}", re.IGNORECASE | re.VERBOSE)),
    ("money", re.compile(rf"(?:[$€£¥]\s?{_NUMBER}|\b{_NUMBER}\s?(?:bn|billion|trillion)\b)", re.IGNORECASE)),
]


def finance_match(text: str, mode: FilterMode) -> str | None:
    """What makes `text` finance news under `mode` ("word: earnings"), or None to drop it."""
    if mode == "off":
        return "filter off"
    if mode not in ("strict", "relaxed"):
        raise ValueError(f"unknown finance filter mode {mode!r}: use strict, relaxed or off")
    patterns = _STRICT + _RELAXED if mode == "relaxed" else _STRICT
    for label, pattern in patterns:
        found = pattern.search(text)
        if found:
            return f"{label}: {found.group(0).strip()}"
    return None
