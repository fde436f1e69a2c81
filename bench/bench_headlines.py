"""How fast a day is assembled, how a big file imports, and what a hostile feed server costs.

Run: .venv/bin/python -m bench.bench_headlines [assemble|import|hostile ...]  (default: all)

- assemble: read + normalise + filter + dedupe + cap of the sample days, and the filter alone.
- import: a 100,000-record JSONL over 20 days, as `varro headlines import` reads it
  (file_dates, then one collect per day): the first day and all twenty.
- hostile: one fetch each from the loopback test server (tests/fixtures/feeds/server.py)
  with the default config (see HOSTILE: a `gzip, gzip` bomb, a 50 MB stream, slowloris,
  a dripping body, a 2 MB title, a redirect chain, Retry-After, a resolver that never
  answers, a feed at the size limit), then all of them in one day. Wall time and the
  fetch's peak Python memory (tracemalloc), whatever the server does.
- limit: the worst bounded input of a day's assembly: one feed at `max_bytes` of tiny
  items (short titles, and titles near the headline cap with markup), parsed, then assembled.
- stream: a JSONL dump of articles (a headline beside a 40 kB body, 80 MB in all) over 15
  days, imported as `varro headlines import` does, with tracemalloc's peak; then the worst
  case for the items kept: a file at the default `max_file_bytes` of the shortest records.
"""

import importlib.util
import json
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
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


HOSTILE = {
    "/gzip-bomb": "`gzip, gzip` bomb, 200 MB decoded",
    "/huge": "50 MB streamed without a length",
    "/slowloris": "a header byte every 2 s",
    "/slow-body": "the body a byte every 2 s",
    "/long-title": "a 2 MB title",
    "/redirect/50": "a 50-hop redirect chain",
    "/retry-after/20": "429, Retry-After: 20",
    "dns": "a resolver that never answers",
    "/big-feed/9900000": "a well-formed 9.9 MB feed (at the limit)",
    "/feeds/rss2.xml": "a normal feed",
}


def _server():
    spec = importlib.util.spec_from_file_location("varro_bench_feed_server", SERVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FeedServer(drip_s=2.0).start()


def _hung_resolver():
    """getaddrinfo that never answers for *.hang.test (a dead DNS server), as the tests fake it."""
    import socket

    real, release = socket.getaddrinfo, threading.Event()

    def resolver(host, *args, **kwargs):
        if str(host).endswith(".hang.test"):
            release.wait(600)
        return real(host, *args, **kwargs)

    socket.getaddrinfo = resolver
    return release


def _measure(server, paths, tmp: str):
    port = server.httpd.server_address[1]
    urls = [f"http://dns.hang.test:{port}/feeds/rss1.xml" if p == "dns" else server.url(p) for p in paths]
    feeds = Path(tmp) / "feeds.toml"
    feeds.write_text("[markets]\n" + "".join(f'f{n} = "{url}"\n' for n, url in enumerate(urls)))
    cfg = HeadlinesConfig(feeds_file=str(feeds))
    tracemalloc.start()
    start = time.perf_counter()
    day = collect("rss", "2025-07-30", cfg, today="2025-07-30")
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return cfg, day, elapsed, peak


def hostile() -> None:
    """Each hostile server alone, then all of them in one day; the default config throughout."""
    server = _server()
    release = _hung_resolver()
    try:
        with urllib.request.urlopen(server.url("/gzip-bomb"), timeout=60) as warm:  # built once, not timed
            warm.read()
        with tempfile.TemporaryDirectory() as tmp:
            for path, what in HOSTILE.items():
                cfg, day, elapsed, peak = _measure(server, [path], tmp)
                report = day.reports[0]
                outcome = report.error or f"{report.status}, {report.fetched} items"
                print(f"hostile {what} ({path}): {elapsed:.2f} s, peak {peak / 2**20:.1f} MiB: {outcome[:90]}")
            cfg, day, elapsed, peak = _measure(server, list(HOSTILE), tmp)
            ok = sum(r.status == "ok" for r in day.reports)
            print(
                f"hostile day, all {len(HOSTILE)} at once (timeout_s={cfg.timeout_s:g}, deadline_s={cfg.deadline_s:g}, "
                f"retries={cfg.retries}, max_bytes={cfg.max_bytes:,}): {elapsed:.2f} s, peak {peak / 2**20:.1f} MiB, "
                f"{ok} feeds ok"
            )
    finally:
        release.set()
        server.stop()


def limit() -> None:
    from varro.headlines.collect import assemble as assemble_day
    from varro.headlines.feeds import Feed, parse_feed
    from varro.headlines.normalize import MAX_HEADLINE_CHARS

    cfg = HeadlinesConfig()
    head = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
    when = "Wed, 30 Jul 2025 09:00:00 GMT"
    long = "&lt;b&gt;Gold&lt;/b&gt; rises " + "x" * (MAX_HEADLINE_CHARS - 40)
    for label, title in (("short titles", "Gold rises"), ("titles near the cap, with markup", long)):
        parts, total, n = [head], len(head), 0
        while total < cfg.max_bytes - 200:
            item = f"<item><title>{title} {n}</title><link>https://ex.example.com/{n}</link>"
            piece = f"{item}<pubDate>{when}</pubDate></item>".encode()
            parts.append(piece)
            total, n = total + len(piece), n + 1
        body = b"".join(parts) + b"</channel></rss>"
        start = time.perf_counter()
        read = parse_feed(body, Feed("f", "https://ex.example.com/rss", "markets"))
        parsed = time.perf_counter() - start
        start = time.perf_counter()
        day = assemble_day([read], "2025-07-30", cfg, earliest="2025-07-29", latest=None)
        assembled = time.perf_counter() - start
        print(
            f"limit, {label}: {len(body):,} bytes, {len(read.items):,} items: parse {parsed:.2f} s, "
            f"assemble {assembled:.2f} s ({assembled / len(read.items) * 1e6:.1f} us an item), "
            f"{len(day.headlines)} kept"
        )


def stream(records: int = 2000, body_chars: int = 40_000, days: int = 15) -> None:
    body = "The desk reports. " * (body_chars // 18)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dump.jsonl"
        with path.open("w") as out:
            for n in range(records):
                when = f"2025-03-{n % days + 1:02d}T10:00:00Z"
                out.write(f'{{"text": "Gold rises {n}%", "link": "https://g.example.com/{n}", "published": "{when}", ')
                out.write(f'"body": "{body}"}}\n')
        size = path.stat().st_size
        cfg = HeadlinesConfig(max_file_bytes=200_000_000)
        tracemalloc.start()
        start = time.perf_counter()
        dates = file_dates([path], cfg)
        kept = sum(len(collect("files", day, cfg, paths=[path]).headlines) for day in dates)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(
        f"stream {records:,} articles ({size / 1e6:.1f} MB JSONL) over {len(dates)} days: {elapsed:.2f} s, "
        f"peak {peak / 2**20:.1f} MiB, {kept:,} headlines"
    )
    _shortest_records()


def _shortest_records() -> None:
    from varro.headlines import files

    cfg = HeadlinesConfig()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.jsonl"
        with path.open("w") as out:
            n = size = 0
            while size < cfg.max_file_bytes - 100:
                line = f'{{"text":"Gold {n}","link":"https://g.co/{n}","published":"2025-03-{n % 20 + 1:02d}"}}\n'
                out.write(line)
                size, n = size + len(line), n + 1
        start = time.perf_counter()
        collect("files", file_dates([path], cfg)[0], cfg, paths=[path])
        elapsed = time.perf_counter() - start
        files._CACHE.clear()
        tracemalloc.start()
        collect("files", file_dates([path], cfg)[0], cfg, paths=[path])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(
        f"stream {n:,} shortest records ({size:,} bytes JSONL): file_dates + first day {elapsed:.1f} s "
        f"(without tracemalloc), peak {peak / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    chosen = sys.argv[1:] or ["assemble", "import", "hostile"]
    for name in chosen:
        {"assemble": assemble, "import": file_import, "hostile": hostile, "limit": limit, "stream": stream}[name]()
