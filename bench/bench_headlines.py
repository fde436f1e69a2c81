"""How fast a day is assembled: read + normalise + filter + dedupe + cap, and the filter alone.

Run: .venv/bin/python -m bench.bench_headlines
"""

import time

import varro  # noqa: F401  (first, before anything may import mlx)
from varro.config import HeadlinesConfig
from varro.headlines.collect import collect, sample_dates
from varro.headlines.finance import finance_match


def main(repeats: int = 20) -> None:
    days = sample_dates()
    cfg = HeadlinesConfig()
    start = time.perf_counter()
    items = 0
    for _ in range(repeats):
        for day in days:
            items += collect("sample", day, cfg).reports[0].fetched
    assembled = time.perf_counter() - start
    texts = [h.text for day in days for h in collect("sample", day, HeadlinesConfig(filter="off")).headlines]
    start = time.perf_counter()
    for _ in range(repeats * 10):
        for text in texts:
            finance_match(text, "strict")
    filtered = time.perf_counter() - start
    print(
        f"assemble (sample days, file read included): {items / assembled:,.0f} items/s "
        f"({assembled / (repeats * len(days)) * 1e3:.2f} ms per day of ~38 items)"
    )
    print(f"finance filter, strict: {len(texts) * repeats * 10 / filtered:,.0f} headlines/s")


if __name__ == "__main__":
    main()
