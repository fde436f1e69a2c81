"""How fast a day is assembled, how a big file imports, and what a hostile feed server costs.

Run: .venv/bin/python -m bench.bench_headlines [assemble|import|hostile ...]  (default: all)

- assemble: read + normalise + filter + dedupe + cap of the sample days, and the filter alone.
- import: a 100,000-record JSONL over 20 days, as `varro headlines import` reads it
  (file_dates, then one collect per day): the first day and all twenty.
- hostile: one fetch each from the loopback test server (tests/fixtures/feeds/server.py)
  with the default config: a `gzip, gzip` bomb (200 MB decoded), a slowloris server
  (a header byte every 2 s), a body dripping a byte every 2 s. Wall time and the
  fetch's peak Python memory (tracemalloc), whatever the server does.
"""

import importlib.util
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import varro  # noqa: F401  (first, before anything may import mlx)
from varro.config import HeadlinesConfig
from varro.headlines.collect import collect, file_dates, sample_dates
from varro.headlines.finance import finance_match

SERVER = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "feeds" / "server.py"


def assemble(repeats: int = 20) -> None:
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


def file_import(records: int = 100_000, days: int = 20) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.jsonl"
        with path.open("w") as out:
            for n in range(records):
                day = 1 + n % days
                out.write(
                    json.dumps(
                        {
                            "text": f"Stocks rise {n / 100:.2f}% as story {n} unfolds",
                            "link": f"https://bench.example.com/{n}",
                            "published": f"2025-03-{day:02d}T{n % 24:02d}:00:00Z",
                        }
                    )
                    + "\n"
                )
        size = path.stat().st_size
        cfg = HeadlinesConfig(cap_per_day=0)
        start = time.perf_counter()
        dates = file_dates([path])
        first = None
        kept = 0
        for day in dates:
            kept += len(collect("files", day, cfg, paths=[path]).headlines)
            first = first or time.perf_counter() - start
        total = time.perf_counter() - start
    print(
        f"import {records:,} records ({size / 1e6:.1f} MB JSONL) over {len(dates)} days: "
        f"first day {first:.2f} s, all {len(dates)} days {total:.2f} s ({kept:,} headlines)"
    )


def hostile() -> None:
    spec = importlib.util.spec_from_file_location("varro_bench_feed_server", SERVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server = module.FeedServer(drip_s=2.0).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for path in ("/gzip-bomb", "/slowloris", "/slow-body", "/feeds/rss2.xml"):
                feeds = Path(tmp) / "feeds.toml"
                feeds.write_text(f'[markets]\nfeed = "{server.url(path)}"\n')
                cfg = HeadlinesConfig(feeds_file=str(feeds), retries=0)
                tracemalloc.start()
                start = time.perf_counter()
                day = collect("rss", "2025-07-30", cfg, today="2025-07-30")
                elapsed = time.perf_counter() - start
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                report = day.reports[0]
                outcome = report.error or f"{report.status}, {report.fetched} items"
                print(
                    f"hostile {path} (timeout_s={cfg.timeout_s:g}, max_bytes={cfg.max_bytes:,}): "
                    f"{elapsed:.2f} s, peak {peak / 2**20:.1f} MiB: {outcome}"
                )
    finally:
        server.stop()


if __name__ == "__main__":
    chosen = sys.argv[1:] or ["assemble", "import", "hostile"]
    for name in chosen:
        {"assemble": assemble, "import": file_import, "hostile": hostile}[name]()
