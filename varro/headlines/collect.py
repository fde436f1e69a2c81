"""One day's headlines from one kind of source: read, normalise, dedupe, filter, cap.

The result is data only (headlines, a report per source, the raw bytes of each
source); recording it is the fetch job's business. Every choice is a function
of the inputs and the date, never of arrival order or the wall clock, so the
same payloads always give the same day.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import structlog

from events.errors import PermanentError, VarroError
from events.ids import sha256_hex, shift_date, today_utc, validate_date
from events.schema import Headline, SourceReport
from varro.config import HeadlinesConfig
from varro.headlines.feeds import Feed, FeedState, fetch_feed, load_feeds
from varro.headlines.files import read_file
from varro.headlines.finance import finance_match
from varro.headlines.items import FilePayload, SourceRead
from varro.headlines.normalize import (
    MAX_HEADLINE_CHARS,
    canonical_url,
    clean_text,
    headline_id,
    source_name,
    to_utc_iso,
)
from varro.headlines.transport import bounded_client, environment_proxies

SourceKind = Literal["sample", "files", "rss"]
SOURCE_KINDS: tuple[str, ...] = ("sample", "files", "rss")
_MAX_PARALLEL_FEEDS = 8
# The share of headlines.deadline_s kept for assembling a live day after its feeds: about 2 s per
# feed at max_bytes of tiny items (BENCHMARKS.md), so 18 s of the default 180 s covers 9 such feeds.
ASSEMBLY_SHARE = 0.1
log = structlog.get_logger("varro.headlines")


class PastDateError(PermanentError, ValueError):
    """Live feeds only carry today's news, so they cannot stand in for another day."""


class NoHeadlinesError(VarroError, RuntimeError):
    """No source yielded a single headline for the day; nothing should be recorded."""

    def __init__(self, message: str, reports: list[SourceReport]):
        super().__init__(message)
        self.reports = reports


@dataclass(frozen=True)
class DayHeadlines:
    headlines: list[Headline]
    reports: list[SourceReport]
    payloads: dict[str, bytes | FilePayload]  # a streamed file's bytes stay in the file


def collect(
    kind: SourceKind,
    date: str,
    cfg: HeadlinesConfig,
    *,
    paths: Sequence[Path] = (),
    today: str | None = None,
    client: httpx.Client | None = None,
    state_path: Path | None = None,
    recall: Callable[[str], bytes | None] | None = None,
    on_source: Callable[[SourceRead], None] | None = None,
) -> DayHeadlines:
    """Read day `date` from `kind`.

    `today` defaults to the UTC date; RSS for any other date raises
    PastDateError. `state_path` keeps the feeds' conditional-GET validators and
    `recall` returns earlier payload bytes by sha256, so a 304 still yields the
    feed's items. `on_source` is called as each source finishes (progress).
    """
    validate_date(date)
    report = on_source or (lambda read: None)
    if kind == "sample":
        reads = [read_sample(date)]
        report(reads[0])
    elif kind == "files":
        if not paths:
            raise ValueError("the files source needs at least one file path")
        reads = []
        for path in paths:
            reads.append(read_file(Path(path), max_bytes=cfg.max_file_bytes, max_record_bytes=cfg.max_record_bytes))
            report(reads[-1])
    elif kind == "rss":
        check_source_dates(kind, [date], today=today)
        feeds = load_feeds(cfg.feeds_file)
        # The whole live day ends by deadline_s: the feeds (fetch and parse) by the first part of it,
        # so a feed still parsing at its deadline leaves the assembly of the others time to run.
        start = time.monotonic()
        until = start + cfg.deadline_s
        reads = fetch_all(
            feeds,
            cfg,
            client=client,
            state_path=state_path,
            recall=recall,
            on_source=report,
            day_deadline=start + cfg.deadline_s * (1 - ASSEMBLY_SHARE),
        )
        return assemble(reads, date, cfg, earliest=shift_date(date, -1), latest=None, deadline=until)
    else:
        raise ValueError(f"unknown headline source {kind!r}: use one of {', '.join(SOURCE_KINDS)}")
    # A feed read this morning rightly carries last night's stories; a file day is exactly its day.
    return assemble(reads, date, cfg, earliest=date, latest=date)


def check_source_dates(kind: str, dates: Sequence[str], *, today: str | None = None) -> None:
    """Refuse, before anything is recorded, days that `kind` cannot supply.

    Live RSS carries only today's news, so any other day raises PastDateError
    naming the first such day. Commands that record a request and leave the
    fetch to a worker (`varro daily`, `varro run`) call this first, so a past
    RSS day fails at the prompt instead of in the worker after its retries.
    """
    for date in dates:
        validate_date(date)
    if kind != "rss":
        return
    today = today or today_utc()
    wrong = next((d for d in dates if d != today), None)
    if wrong is not None:
        raise PastDateError(
            f"live RSS feeds carry today's news ({today}), so they cannot be fetched for {wrong}: "
            "use a file source (--source files --file PATH) or replay a recorded day"
        )


def fetch_all(
    feeds: Sequence[Feed],
    cfg: HeadlinesConfig,
    *,
    client: httpx.Client | None = None,
    state_path: Path | None = None,
    recall: Callable[[str], bytes | None] | None = None,
    on_source: Callable[[SourceRead], None] = lambda read: None,
    day_deadline: float | None = None,
) -> list[SourceRead]:
    """Fetch feeds concurrently; results come back in feed order whatever finishes first.

    All of it ends by the monotonic `day_deadline` (default: `cfg.deadline_s` from now): a
    feed still running or waiting then fails with that reason. Pass `client` only for tests;
    the default client is the one whose sockets honour each attempt's deadline
    (`transport.bounded_client`).
    """
    state = FeedState(state_path) if state_path is not None else None
    own_client = client is None
    http = client or bounded_client(cfg.user_agent, cfg.proxy)
    if client is None and cfg.proxy is None and (ignored := environment_proxies()):
        log.warning("environment proxy ignored: feeds use headlines.proxy only", variables=",".join(ignored))
    if day_deadline is None:
        day_deadline = time.monotonic() + cfg.deadline_s

    def one(feed: Feed) -> SourceRead:
        try:
            read = fetch_feed(http, feed, cfg, state=state, recall=recall, day_deadline=day_deadline)
        except Exception as exc:  # isolation boundary: one feed's surprise must not sink the day
            read = SourceRead.failed(feed.name, feed.category, f"unexpected {type(exc).__name__}: {exc}")
        on_source(read)
        return read

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(_MAX_PARALLEL_FEEDS, len(feeds)))) as pool:
            reads = list(pool.map(one, feeds))
    finally:
        if own_client:
            http.close()
    if state is not None:
        state.save()
    return reads


def assemble(
    reads: Sequence[SourceRead],
    date: str,
    cfg: HeadlinesConfig,
    *,
    earliest: str,
    latest: str | None,
    deadline: float | None = None,
) -> DayHeadlines:
    """Normalise, filter general news, dedupe (text and URL), then cap the day.

    Only items published within [earliest, latest] count for `date`. Undated
    items take their file's date (YYYY-MM-DD in its name) or else `date`; with
    no `latest` (live feeds), an item dated after the next day is kept undated
    and counted. A read's warnings and final URL go into its report beside the
    counts; `error` is for failures only.

    With a monotonic `deadline` (live feeds: the end of the day's deadline_s, whose
    last ASSEMBLY_SHARE is left to this), items not reached by then are counted, not
    assembled, so the day ends by it. The work is bounded anyway (about 2 s per feed
    at headlines.max_bytes of tiny items, see BENCHMARKS.md), but a day of many such
    feeds would overrun the deadline by that times the feeds whose parse finished;
    file days take no deadline (a backfill must be the same day however slow the machine).
    """
    late = f"not assembled by the day's fetch deadline (headlines.deadline_s={cfg.deadline_s:g})"
    horizon = shift_date(date, 1)  # no story fetched on `date` was published later than this
    seen_ids: set[str] = set()
    seen_urls: set[str] = set()
    chosen: list[tuple[int, Headline]] = []
    rows: list[dict] = []
    payloads: dict[str, bytes | FilePayload] = {}
    names: Counter[str] = Counter()
    for index, read in enumerate(reads):
        names[read.name] += 1
        name = read.name if names[read.name] == 1 else f"{read.name} ({names[read.name]})"
        if read.payload is not None:
            payloads[name] = read.payload
        row = {
            "source": name,
            "status": read.status,
            "fetched": len(read.items) + sum(read.skipped.values()),
            "kept": 0,
            "dropped_by_filter": 0,
            "duplicates": 0,
            "skipped": Counter(read.skipped),
            "warnings": Counter(read.warnings),
            "error": read.error,
            "final_url": read.final_url,
        }
        rows.append(row)
        for item in _dated_within(read, earliest, latest, row["skipped"]):
            if deadline is not None and time.monotonic() >= deadline:
                row["skipped"][late] += 1
                continue
            # The date first: it is the cheap test, and a file holds many days for each one kept.
            published = to_utc_iso(item.published)
            if published and latest is None and published[:10] > horizon:
                row["warnings"][f"dated after {horizon}, kept undated"] += 1
                published = None
            day = published[:10] if published else (read.date_hint or date)
            if day < earliest:
                row["skipped"][f"published before {earliest}"] += 1
                continue
            if latest is not None and day > latest:
                row["skipped"][f"published after {latest}"] += 1
                continue
            title = item.title if isinstance(item.title, str) else ""
            if len(title) > 8 * MAX_HEADLINE_CHARS:  # not worth cleaning: no markup shrinks it to a headline
                row["skipped"][f"headline over {MAX_HEADLINE_CHARS} characters"] += 1
                continue
            text = clean_text(title, source_title=item.source_title) if title else ""
            if not text:
                row["skipped"]["no title"] += 1
                continue
            if len(text) > MAX_HEADLINE_CHARS:
                row["skipped"][f"headline over {MAX_HEADLINE_CHARS} characters"] += 1
                continue
            url = canonical_url(item.link if isinstance(item.link, str) else None)
            if url is None:
                row["skipped"]["no link" if not item.link else "link is not an http(s) URL"] += 1
                continue
            category = item.category or read.category
            if category == "general" and finance_match(text, cfg.filter) is None:
                row["dropped_by_filter"] += 1
                continue
            hid = headline_id(text)
            if hid in seen_ids or url in seen_urls:
                row["duplicates"] += 1
                continue
            seen_ids.add(hid)
            seen_urls.add(url)
            source = item.source or read.default_source or source_name(url) or read.name
            chosen.append(
                (index, Headline(id=hid, text=text, source=source, url=url, published=published, category=category))
            )
            row["kept"] += 1
    chosen = _cap(chosen, date, cfg.cap_per_day, rows)
    reports = [
        SourceReport(
            source=r["source"],
            status=r["status"],
            fetched=r["fetched"],
            kept=r["kept"],
            dropped_by_filter=r["dropped_by_filter"],
            duplicates=r["duplicates"],
            skipped=dict(sorted(r["skipped"].items())),
            error=r["error"],
            warnings=dict(sorted(r["warnings"].items())),
            final_url=r["final_url"],
        )
        for r in rows
    ]
    return DayHeadlines(headlines=[h for _, h in chosen], reports=reports, payloads=payloads)


def _dated_within(read: SourceRead, earliest: str, latest: str | None, skipped: Counter[str]) -> list:
    """The read's items that may fall in [earliest, latest]; with a day index, the others are only counted."""
    if read.by_day is None:
        return read.items
    positions: list[int] = []
    for day, where in read.by_day.items():
        if day is not None and day < earliest:
            skipped[f"published before {earliest}"] += len(where)
        elif day is not None and latest is not None and day > latest:
            skipped[f"published after {latest}"] += len(where)
        else:
            positions.extend(where)
    return [read.items[i] for i in sorted(positions)]


def _cap(chosen: list[tuple[int, Headline]], date: str, cap: int, rows: list[dict]) -> list[tuple[int, Headline]]:
    """Keep `cap` headlines, shared round-robin across the sources.

    Each source's headlines are ranked by a hash of (date, id); the day takes
    every source's first, then every source's second, and so on, a round that
    does not fit whole going to the lowest hashes. So a 10,000-item feed gets no
    more slots than any other while they have headlines left, and the choice
    depends on neither the order of sources nor the order of their items.
    """
    if cap <= 0 or len(chosen) <= cap:
        return chosen
    ranked: dict[int, list[tuple[str, str]]] = {}
    for index, headline in chosen:
        ranked.setdefault(index, []).append((sha256_hex(f"{date}\x1f{headline.id}".encode()), headline.id))
    order = []
    for hashes in ranked.values():
        hashes.sort()
        order.extend((rank, digest, hid) for rank, (digest, hid) in enumerate(hashes))
    keep = {hid for _, _, hid in sorted(order)[:cap]}
    for index, headline in chosen:
        if headline.id not in keep:
            rows[index]["kept"] -= 1
            rows[index]["skipped"]["over the daily cap"] += 1
    return [pair for pair in chosen if pair[1].id in keep]


SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample_headlines"


def sample_dates() -> list[str]:
    """The bundled sample days, in order."""
    return sorted(p.stem for p in SAMPLE_DIR.glob("*.jsonl"))


def read_sample(date: str) -> SourceRead:
    days = sample_dates()
    if date not in days:
        raise ValueError(f"no bundled sample headlines for {date}: the sample covers {days[0]} .. {days[-1]}")
    read = read_file(SAMPLE_DIR / f"{date}.jsonl")
    read.name = f"sample/{date}.jsonl"
    return read


def _day_of(item) -> str | None:
    published = to_utc_iso(item.published)
    return published[:10] if published else None


def file_dates(paths: Sequence[Path], cfg: HeadlinesConfig | None = None) -> list[str]:
    """Days the files hold headlines for (by `published`, else the date in the file name).

    The files are parsed here once; the days' `collect` calls reuse the parsed reads.
    """
    cfg = cfg or HeadlinesConfig()
    dates: set[str] = set()
    for path in paths:
        read = read_file(Path(path), max_bytes=cfg.max_file_bytes, max_record_bytes=cfg.max_record_bytes)
        if read.status == "failed":
            raise ValueError(f"{path}: {read.error}")
        # a file's read indexes its items by day already (their times normalised as they were read)
        days = read.by_day if read.by_day is not None else {_day_of(item): None for item in read.items}
        dates.update(day or read.date_hint for day in days if day or read.date_hint)
    return sorted(dates)
