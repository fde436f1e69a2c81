"""Economic metrics: what the predictions would have earned against daily closes the user supplies.

A prediction is scored only when all three parts parse from its sections, and
is otherwise counted with the reason, never guessed:

* **assets** — symbols in *Specific Assets* that the price file knows (a whole
  word, case as in the file: ``XLE``, ``$NVDA``); several are weighted equally;
* **direction** — *Trade Recommendation* says long (buy, long, overweight,
  add, accumulate, bullish, calls) or short (sell, short, underweight, reduce,
  bearish, puts), not both and not neither;
* **horizon** — *Timeframe* names a count and a unit ("two to six weeks" is 2
  weeks, "1-3 months" is 1 month: the first bound), or "intraday"/"overnight"
  (1 trading day). Weeks are 5 trading days, months 21, quarters 63, years 252.

Entry is the asset's close on the prediction's day (or the last close before
it); exit is the close `horizon` trading days later in the file. A prediction
whose exit lies beyond the file is "not yet due". The return of a prediction is
direction × (exit / entry − 1), averaged over its assets. The paper P&L of a
day is the equal-weight mean over its scored predictions; its mean over days
gets a 95% bootstrap interval with days as the unit. Baselines on the same
predictions: always long (direction +1), and a coin flip (hit rate 0.5 and
P&L 0 in expectation, exactly).
"""

from __future__ import annotations

import bisect
import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from events.errors import PermanentError
from events.ids import validate_date
from events.schema import AnyEvent, RolloutsGenerated
from varro.evaluation.stats import Estimate, clustered
from varro.structure import section_texts


class PriceFileError(PermanentError, ValueError):
    """The price file cannot be read; the message names the line."""


LONG = re.compile(r"\b(buy|buying|long|overweight|add|accumulate|bullish|calls?)\b", re.IGNORECASE)
SHORT = re.compile(r"\b(sell|selling|short|shorting|underweight|reduce|bearish|puts?)\b", re.IGNORECASE)
_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "a": 1, "an": 1,
}  # fmt: skip
_UNITS = {"day": 1, "session": 1, "week": 5, "month": 21, "quarter": 63, "year": 252}
_HORIZON = re.compile(
    r"\b(\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|a|an)\b"
    r"(?:\s*(?:-|–|to)\s*(?:\d+|\w+))?\s*(?:trading\s+)?(day|session|week|month|quarter|year)s?\b",
    re.IGNORECASE,
)
_ONE_DAY = re.compile(r"\b(intraday|overnight|today|tomorrow)\b", re.IGNORECASE)
BUCKETS = ((1, "1 day"), (5, "≤ 1 week"), (21, "≤ 1 month"), (10**9, "> 1 month"))


class Prices:
    """Daily closes by symbol, from a CSV with columns date, symbol, close (`#` lines are comments)."""

    def __init__(self, closes: dict[str, dict[str, float]]):
        self.closes = closes
        self.dates = {s: sorted(d) for s, d in closes.items()}

    @classmethod
    def read(cls, text: str, *, origin: str = "prices") -> Prices:
        rows = csv.reader(line for line in io.StringIO(text) if not line.lstrip().startswith("#"))
        header = next(rows, None)
        if header is None or [h.strip().lower() for h in header] != ["date", "symbol", "close"]:
            raise PriceFileError(f"{origin}: the first row must be the header date,symbol,close, got {header}")
        closes: dict[str, dict[str, float]] = {}
        for n, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != 3:
                raise PriceFileError(f"{origin}, data row {n}: expected date,symbol,close, got {row}")
            date, symbol, close = (x.strip() for x in row)
            try:
                validate_date(date)
                value = float(close)
            except ValueError as exc:
                raise PriceFileError(f"{origin}, data row {n}: {exc}") from None
            if not value > 0 or value == float("inf"):
                raise PriceFileError(f"{origin}, data row {n}: close must be a positive number, got {close!r}")
            if not re.fullmatch(r"[A-Za-z0-9.^=\-]{1,15}", symbol):
                raise PriceFileError(f"{origin}, data row {n}: {symbol!r} is not a ticker symbol")
            if date in closes.setdefault(symbol, {}):
                raise PriceFileError(f"{origin}, data row {n}: a second close for {symbol} on {date}")
            closes[symbol][date] = value
        if not closes:
            raise PriceFileError(f"{origin}: no prices")
        return cls(closes)

    def entry(self, symbol: str, date: str) -> tuple[int, float] | None:
        """(index in the symbol's dates, close) of the last close on or before `date`."""
        dates = self.dates[symbol]
        i = bisect.bisect_right(dates, date) - 1
        return None if i < 0 else (i, self.closes[symbol][dates[i]])

    def exit(self, symbol: str, index: int, horizon: int) -> float | None:
        dates = self.dates[symbol]
        j = index + horizon
        return None if j >= len(dates) else self.closes[symbol][dates[j]]


@dataclass(frozen=True)
class Parsed:
    assets: tuple[str, ...] = ()
    direction: int = 0
    horizon: int = 0
    reason: str | None = None  # why it cannot be scored


def parse_prediction(text: str, symbols: Iterable[str]) -> Parsed:
    sections = section_texts(text)
    missing = [s for s in ("Specific Assets", "Trade Recommendation", "Timeframe") if s not in sections]
    if missing:
        return Parsed(reason=f"no {missing[0]} section")
    assets_text = sections["Specific Assets"]
    assets = tuple(s for s in sorted(set(symbols)) if re.search(rf"(?<![\w$])\$?{re.escape(s)}(?!\w)", assets_text))
    if not assets:
        return Parsed(reason="no priced asset")
    rec = sections["Trade Recommendation"]
    long, short = bool(LONG.search(rec)), bool(SHORT.search(rec))
    if long == short:
        return Parsed(reason="mixed direction" if long else "no direction")
    horizon = parse_horizon(sections["Timeframe"])
    if horizon is None:
        return Parsed(reason="no horizon")
    return Parsed(assets=assets, direction=1 if long else -1, horizon=horizon)


def parse_horizon(text: str) -> int | None:
    """Trading days named by a Timeframe section (its first bound), or None."""
    match = _HORIZON.search(text)
    if match:
        count = match.group(1).lower()
        n = int(count) if count.isdigit() else _NUMBERS[count]
        return n * _UNITS[match.group(2).lower()] if n > 0 else None
    return 1 if _ONE_DAY.search(text) else None


class HorizonStats(msgspec.Struct, frozen=True, kw_only=True):
    bucket: str
    scored: int
    hit_rate: float
    long_hit_rate: float


class EconReport(msgspec.Struct, frozen=True, kw_only=True):
    predictions: int
    parsed: int
    parse_rate: float
    not_yet_due: int
    scored: int
    unparsed: dict[str, int]
    hit_rate: float | None
    by_horizon: list[HorizonStats]
    days: int
    pnl: Estimate | None
    always_long: Estimate | None
    coin_flip_hit_rate: float = 0.5
    coin_flip_pnl: float = 0.0


def evaluate(
    events: Iterable[AnyEvent],
    prices: Prices,
    *,
    start: str | None = None,
    end: str | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> EconReport:
    """Every roll-out of the log's latest generation per day in [start, end], against `prices`."""
    latest: dict[str, RolloutsGenerated] = {}
    for event in events:
        if (
            isinstance(event, RolloutsGenerated)
            and (start is None or event.date >= start)
            and (end is None or event.date <= end)
        ):
            latest[event.date] = event
    symbols = list(prices.closes)
    total = parsed_n = not_due = 0
    unparsed: dict[str, int] = {}
    daily: dict[str, list[float]] = {}
    daily_long: dict[str, list[float]] = {}
    hits: list[tuple[int, bool, bool]] = []  # (horizon, hit, always-long hit)
    for date, event in sorted(latest.items()):
        for group in event.groups:
            for rollout in group.rollouts:
                total += 1
                p = parse_prediction(rollout.text, symbols)
                if p.reason is not None:
                    unparsed[p.reason] = unparsed.get(p.reason, 0) + 1
                    continue
                parsed_n += 1
                moves = []
                for symbol in p.assets:
                    entry = prices.entry(symbol, date)
                    exit_ = None if entry is None else prices.exit(symbol, entry[0], p.horizon)
                    if entry is None or exit_ is None:
                        break
                    moves.append(exit_ / entry[1] - 1.0)
                if len(moves) != len(p.assets):
                    not_due += 1
                    continue
                move = sum(moves) / len(moves)
                daily.setdefault(date, []).append(p.direction * move)
                daily_long.setdefault(date, []).append(move)
                hits.append((p.horizon, p.direction * move > 0, move > 0))
    by_horizon = []
    low = 0
    for limit, name in BUCKETS:
        inside = [(h, long) for horizon, h, long in hits if low < horizon <= limit]
        low = limit
        if inside:
            by_horizon.append(
                HorizonStats(
                    bucket=name,
                    scored=len(inside),
                    hit_rate=sum(h for h, _ in inside) / len(inside),
                    long_hit_rate=sum(lg for _, lg in inside) / len(inside),
                )
            )
    boot = dict(resamples=resamples, seed=seed)
    return EconReport(
        predictions=total,
        parsed=parsed_n,
        parse_rate=parsed_n / total if total else 0.0,
        not_yet_due=not_due,
        scored=len(hits),
        unparsed=dict(sorted(unparsed.items(), key=lambda kv: -kv[1])),
        hit_rate=sum(h for _, h, _ in hits) / len(hits) if hits else None,
        by_horizon=by_horizon,
        days=len(daily),
        pnl=clustered(daily, **boot) if daily else None,
        always_long=clustered(daily_long, **boot) if daily_long else None,
    )
