"""Write varro/data/sample_prices.csv: SYNTHETIC daily closes for the sample days' demo.

Not market data. Geometric random walks (seeded, so the file is reproducible)
for the ticker symbols the project's small model learnt from its corpus, on
weekdays from 2025-07-01 to 2025-10-31, so `varro econ --prices sample` has
closes for every sample day and a few months of horizons after it.

    .venv/bin/python scripts/make_sample_prices.py
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "varro" / "data" / "corpus" / "predictions.txt"
OUT = ROOT / "varro" / "data" / "sample_prices.csv"
NOT_TICKERS = {
    "US",
    "USD",
    "EUR",
    "JPY",
    "AUD",
    "GBP",
    "CNY",
    "CHF",
    "CAD",
    "UK",
    "AI",
    "ECB",
    "CPI",
    "GDP",
    "CNBC",
    "OPEC",
    "WORLD",
    "VIEW",
    "TRADE",
    "RISK",
    "ETF",
    "WTI",
    "EU",
    "FX",
    "IPO",
    "CEO",
    "PMI",
    "BOJ",
    "RBA",
}


def main() -> None:
    assets = re.findall(r"Specific Assets\W*\n?([^\n]*)", CORPUS.read_text(encoding="utf-8"))
    symbols = sorted({s for line in assets for s in re.findall(r"\b[A-Z]{2,5}\b", line)} - NOT_TICKERS)
    days = []
    day = dt.date(2025, 7, 1)
    while day <= dt.date(2025, 10, 31):
        if day.weekday() < 5:
            days.append(day.isoformat())
        day += dt.timedelta(days=1)
    rng = np.random.Generator(np.random.PCG64(20250804))
    lines = [
        "# SYNTHETIC prices for Varro's demo: seeded random walks, not market data (scripts/make_sample_prices.py)",
        "date,symbol,close",
    ]
    for symbol in symbols:
        start = float(rng.uniform(20, 400))
        steps = rng.normal(0.0003, 0.015, size=len(days))
        closes = start * np.exp(np.cumsum(steps))
        lines.extend(f"{d},{symbol},{c:.2f}" for d, c in zip(days, closes, strict=True))
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(symbols)} symbols x {len(days)} days")


if __name__ == "__main__":
    main()
