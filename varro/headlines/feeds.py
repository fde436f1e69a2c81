"""RSS/Atom feeds over HTTP, one feed at a time, each failure contained in its feed.

A fetch is polite (descriptive User-Agent, conditional GET with the ETag and
Last-Modified of the last answer, Retry-After honoured up to a bound) and
bounded: each attempt ends by one wall-clock deadline (connect, headers and
body together, see `transport`), the day by another; a few retries with
exponential backoff for timeouts, 429 and 5xx; a byte limit on the decoded
body checked as each encoding layer produces it (see `decoding`); redirects
followed by hand, each hop re-checked (http(s), a standard port or the feed's
own, and a public address for a public feed: see `_download`); the parse, too,
ends by the day's deadline. Whatever goes wrong ends as a failed `SourceRead`
with the reason; it never raises into the day's other feeds.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import feedparser
import httpx

from events.errors import PermanentError
from events.ids import sha256_hex
from varro.artifacts import atomic_write
from varro.config import HeadlinesConfig
from varro.headlines.decoding import BoundedDecoder, DecodedTooLarge, DecodingError
from varro.headlines.documents import declared_utf8_override, entry_time, recoverable, repair_utf8
from varro.headlines.items import CATEGORIES, Category, RawItem, SourceRead
from varro.headlines.normalize import source_name
from varro.headlines.transport import InternalAddressRefused, deadline, public_only, went_internal

BUNDLED_FEEDS = Path(__file__).resolve().parent.parent / "data" / "feeds.toml"

# Feeds that carry other publishers' stories: items are named by their own publisher.
AGGREGATOR_HOSTS = {"news.google.com", "news.yahoo.com", "feedproxy.google.com"}


class FeedListError(PermanentError, ValueError):
    """The feed list file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Feed:
    name: str
    url: str
    category: Category


def load_feeds(path: str | Path | None = None) -> list[Feed]:
    """The feeds of `path` (default: the bundled list), in file order.

    The file has one table per category, mapping a unique feed name to its URL::

        [general]          # kept only when finance-related
        bbc-business = "https://feeds.bbci.co.uk/news/business/rss.xml"
        [markets]          # kept
        coindesk = "https://www.coindesk.com/arc/outboundfeeds/rss/"
    """
    if path is None:
        text = BUNDLED_FEEDS.read_text(encoding="utf-8")
        where = "bundled feeds.toml"
    else:
        where = str(path)
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise FeedListError(f"feed list {where}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FeedListError(f"feed list {where} is not valid TOML: {exc}") from None
    feeds: list[Feed] = []
    for category, table in data.items():
        if category not in CATEGORIES or not isinstance(table, dict):
            raise FeedListError(f"feed list {where}: [{category}] is not a category (use [general] or [markets])")
        for name, url in table.items():
            scheme = urlsplit(url).scheme if isinstance(url, str) else ""
            if scheme not in ("http", "https"):
                raise FeedListError(f"feed list {where}: {category}.{name} = {url!r} is not an http(s) URL")
            if any(f.name == name for f in feeds):
                raise FeedListError(f"feed list {where}: feed name {name!r} is used twice")
            feeds.append(Feed(name=name, url=url, category=category))
    if not feeds:
        raise FeedListError(f"feed list {where} names no feeds")
    return feeds


class FeedState:
    """ETag, Last-Modified and payload hash of each feed's last answer, in one JSON file.

    The payload hash lets a 304 reuse the bytes recorded last time, so a
    re-fetch still yields the feed's headlines instead of an empty source.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            self._data: dict[str, dict[str, str]] = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            self._data = {}

    def get(self, url: str) -> dict[str, str]:
        with self._lock:
            return dict(self._data.get(url, {}))

    def remember(self, url: str, headers: httpx.Headers, sha256: str) -> None:
        entry = {"sha256": sha256}
        if headers.get("etag"):
            entry["etag"] = headers["etag"]
        if headers.get("last-modified"):
            entry["last_modified"] = headers["last-modified"]
        with self._lock:
            self._data[url] = entry

    def save(self) -> None:
        with self._lock:
            data = json.dumps(self._data, indent=1, sort_keys=True).encode()
        atomic_write(self.path, data)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _Fatal(Exception):
    pass


@dataclass(frozen=True)
class _Answer:
    code: int
    headers: httpx.Headers
    body: bytes
    url: str  # where the answer came from, after redirects


_REDIRECT_CODES = (301, 302, 303, 307, 308)


def fetch_feed(
    client: httpx.Client,
    feed: Feed,
    cfg: HeadlinesConfig,
    *,
    state: FeedState | None = None,
    recall: Callable[[str], bytes | None] | None = None,
    day_deadline: float | None = None,
) -> SourceRead:
    """Download and parse one feed; any failure is a failed SourceRead naming the reason.

    Every attempt ends by `cfg.timeout_s` of wall clock and everything, waits
    included, by the monotonic `day_deadline` (default: one `cfg.deadline_s` from now).
    """
    known = state.get(feed.url) if state is not None and recall is not None else {}
    until = day_deadline if day_deadline is not None else time.monotonic() + cfg.deadline_s
    status = "ok"
    try:
        answer = _download_with_retries(client, feed.url, cfg, known, until)
        if answer.code == 304:
            previous = recall(known["sha256"]) if recall is not None and known.get("sha256") else None
            if previous is None:
                answer = _download_with_retries(client, feed.url, cfg, {}, until)
            else:
                status, answer = "not_modified", _Answer(304, answer.headers, previous, answer.url)
    except _Fatal as exc:
        return SourceRead.failed(feed.name, feed.category, str(exc))
    read = _parse_by(until, answer, feed, cfg)
    if read.status == "ok":
        read.status = status
        if state is not None and status == "ok":
            state.remember(feed.url, answer.headers, sha256_hex(answer.body))
    return read


def _parse_by(until: float, answer: _Answer, feed: Feed, cfg: HeadlinesConfig) -> SourceRead:
    """`parse_feed` of the answer, waited for until the monotonic `until` (the day's deadline).

    feedparser cannot be interrupted, and a feed at `max_bytes` of tiny items takes
    seconds of CPU per megabyte, so the parse runs on a daemon thread of its own; one
    still running at the deadline fails its feed and is abandoned (it ends by itself,
    its work bounded by `max_bytes`, and holds up neither the day nor the process's exit).
    """
    result: list[SourceRead] = []
    done = threading.Event()

    def parse() -> None:
        try:
            content_type = answer.headers.get("content-type", "")
            result.append(parse_feed(answer.body, feed, content_type=content_type, final_url=answer.url))
        except Exception as exc:  # isolation boundary, as in fetch_all: a parser surprise fails this feed only
            result.append(SourceRead.failed(feed.name, feed.category, f"unexpected {type(exc).__name__}: {exc}"))
        finally:
            done.set()

    threading.Thread(target=parse, name=f"parse {feed.name}", daemon=True).start()
    if not done.wait(max(0.0, until - time.monotonic())):
        return SourceRead.failed(
            feed.name,
            feed.category,
            f"parsing its {len(answer.body):,} bytes did not finish by the day's fetch deadline "
            f"(headlines.deadline_s={cfg.deadline_s:g})",
            answer.body,
        )
    return result[0]


def _download_with_retries(
    client: httpx.Client, url: str, cfg: HeadlinesConfig, known: dict[str, str], day_deadline: float
) -> _Answer:
    headers = {
        "User-Agent": cfg.user_agent,
        "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5",
        "Accept-Encoding": "gzip, deflate",
    }
    if known.get("etag"):
        headers["If-None-Match"] = known["etag"]
    if known.get("last_modified"):
        headers["If-Modified-Since"] = known["last_modified"]
    attempts = max(1, cfg.retries + 1)
    attempt = 0
    while True:
        start = time.monotonic()
        if start >= day_deadline:
            raise _Fatal(f"not fetched: the day's fetch deadline (headlines.deadline_s={cfg.deadline_s:g}) passed")
        until = min(start + cfg.timeout_s, day_deadline)
        try:
            with deadline(until):
                return _download(client, url, headers, cfg, until)
        except _Retryable as exc:
            attempt += 1
            reason = str(exc)
            if until < start + cfg.timeout_s and time.monotonic() >= until:
                raise _Fatal(
                    f"{reason}: stopped at the day's fetch deadline (headlines.deadline_s={cfg.deadline_s:g})"
                ) from None
            if attempt >= attempts:
                raise _Fatal(f"{reason} (gave up after {attempts} attempt{'s' if attempts > 1 else ''})") from None
            wait = cfg.backoff_s * 2 ** (attempt - 1)
            if exc.retry_after is not None:
                if exc.retry_after > cfg.retry_after_max_s:
                    raise _Fatal(
                        f"{reason}, Retry-After {exc.retry_after:g}s is over "
                        f"headlines.retry_after_max_s={cfg.retry_after_max_s:g}; not retried"
                    ) from None
                wait = max(wait, exc.retry_after)
            if time.monotonic() + wait >= day_deadline:
                raise _Fatal(f"{reason}, and a retry in {wait:g}s would pass the day's fetch deadline") from None
            time.sleep(wait)


def _download(client: httpx.Client, url: str, headers: dict[str, str], cfg: HeadlinesConfig, until: float) -> _Answer:
    """One attempt: follow up to `cfg.max_redirects` http(s) redirects, then read and decode the body.

    A feed whose own URL answered from a public address is followed to public addresses only
    (`transport.public_only`): a redirect cannot turn the fetcher on the machine's own network.
    A feed that is itself internal (a loopback test feed, an intranet one) may redirect anywhere.
    """
    origin = url
    origin_internal, code = True, 0
    went_internal(forget=True)
    try:
        for hop in range(cfg.max_redirects + 1):
            with (
                public_only(not origin_internal),
                client.stream("GET", url, headers=headers, timeout=cfg.timeout_s, follow_redirects=False) as resp,
            ):
                if hop == 0:  # judged by where the request went, not by the name: a name may rebind
                    origin_internal = went_internal() is not False  # None: a client not this module's
                code = resp.status_code
                if code in _REDIRECT_CODES:
                    url = _redirect_target(origin, url, resp.headers.get("location"), code)
                    continue
                if code == 304:
                    return _Answer(code, resp.headers, b"", url)
                if code == 429 or code >= 500:
                    wait = retry_after_s(resp.headers.get("retry-after")) if code in (429, 503) else None
                    raise _Retryable(f"HTTP {code} {resp.reason_phrase}", retry_after=wait)
                if code != 200:
                    raise _Fatal(f"HTTP {code} {resp.reason_phrase}")
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cfg.max_bytes:
                    raise _Fatal(f"feed is {int(declared)} bytes, over headlines.max_bytes={cfg.max_bytes}")
                return _Answer(code, resp.headers, _read_body(resp, cfg, until), url)
        raise _Fatal(f"more than headlines.max_redirects={cfg.max_redirects} redirects (last: {url})")
    except InternalAddressRefused as exc:
        raise _Fatal(f"HTTP {code} redirect to {url[:200]!r} refused: {exc}, and the feed itself is public") from None
    except httpx.TimeoutException:
        raise _Retryable(f"no complete answer within {cfg.timeout_s:g}s") from None
    except httpx.TransportError as exc:
        raise _Retryable(f"connection failed: {exc or type(exc).__name__}") from None
    except httpx.HTTPError as exc:
        raise _Fatal(f"HTTP error: {exc or type(exc).__name__}") from None


def _read_body(resp: httpx.Response, cfg: HeadlinesConfig, until: float) -> bytes:
    """The body with its Content-Encoding undone, `cfg.max_bytes` applied to raw and decoded bytes alike."""
    try:
        decoder = BoundedDecoder(resp.headers.get("content-encoding", ""), cfg.max_bytes)
        chunks, raw = [], 0
        for chunk in resp.iter_raw():
            raw += len(chunk)
            if raw > cfg.max_bytes:
                raise _Fatal(f"feed exceeds headlines.max_bytes={cfg.max_bytes}; download aborted")
            chunks.append(decoder.feed(chunk))
            if time.monotonic() > until:
                raise _Retryable(f"no complete answer within {cfg.timeout_s:g}s")
        chunks.append(decoder.finish())
    except DecodedTooLarge:
        raise _Fatal(f"feed exceeds headlines.max_bytes={cfg.max_bytes} once decoded; download aborted") from None
    except DecodingError as exc:
        raise _Fatal(str(exc)) from None
    return b"".join(chunks)


def _redirect_target(origin: str, current: str, location: str | None, code: int) -> str:
    """The next hop, held to the feed list's own rules: http(s), and the origin's port or a standard one."""
    if not location:
        raise _Fatal(f"HTTP {code} redirect without a Location")
    target = urljoin(current, location.strip())
    try:
        parts = urlsplit(target)
        port = parts.port
        origin_port = urlsplit(origin).port
    except ValueError:
        raise _Fatal(f"HTTP {code} redirect to an unreadable URL {location[:200]!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Fatal(f"HTTP {code} redirect to {target[:200]!r} refused: only http(s) URLs are followed")
    if port is not None and port not in (80, 443, origin_port):
        raise _Fatal(
            f"HTTP {code} redirect to {target[:200]!r} refused: port {port} is neither the feed's nor standard"
        )
    return target


def retry_after_s(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def parse_feed(body: bytes, feed: Feed, *, content_type: str = "", final_url: str | None = None) -> SourceRead:
    """RSS 0.9x/1.0/2.0 or Atom bytes into raw items; anything else fails with the reason.

    Relative links resolve against `final_url`, where the document was served after redirects.
    """
    name, category = feed.name, feed.category
    if not body.strip():
        return SourceRead.failed(name, category, "empty response: no feed document", body)
    headers = {"content-type": content_type or "application/xml", "content-location": final_url or feed.url}
    parsed = feedparser.parse(body, response_headers=headers)
    problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
    warnings: Counter[str] = Counter()
    if declared_utf8_override(problem):
        repaired, strays = repair_utf8(body)
        parsed = feedparser.parse(repaired, response_headers=headers)
        problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
        if isinstance(problem, feedparser.CharacterEncodingOverride):
            return SourceRead.failed(name, category, f"charset cannot be trusted: {problem}", body)
        warnings[f"{strays} byte{'s' if strays != 1 else ''} not UTF-8, read as cp1252"] += 1
    if not parsed.get("version"):
        head = body[:512].lstrip().lower()
        if "html" in content_type.lower() or head.startswith((b"<!doctype html", b"<html")):
            served = content_type or "no content-type"
            return SourceRead.failed(name, category, f"served an HTML page, not a feed ({served})", body)
        reason = f": {problem}" if problem else ""
        return SourceRead.failed(name, category, f"not an RSS or Atom feed{reason}", body)
    if isinstance(problem, feedparser.CharacterEncodingOverride):
        return SourceRead.failed(name, category, f"charset cannot be trusted: {problem}", body)
    if problem is not None and not isinstance(problem, feedparser.NonXMLContentType):
        if not (parsed.entries and recoverable(problem, body)):
            return SourceRead.failed(name, category, f"malformed feed XML: {problem}", body)
        warnings[f"recovered from malformed feed XML: {problem}"] += 1
    host = urlsplit(feed.url).hostname or ""
    read = SourceRead(
        name=name,
        category=category,
        payload=body,
        default_source=None if host in AGGREGATOR_HOSTS else source_name(feed.url),
        final_url=final_url if final_url and final_url != feed.url else None,
        warnings=warnings,
    )
    for entry in parsed.entries:
        origin = entry.get("source") or {}
        published, note = entry_time(entry)
        if note:
            read.warnings[note] += 1
        read.items.append(
            RawItem(
                title=entry.get("title"),
                link=entry.get("link"),
                published=published,
                source=source_name(origin.get("href")),
                source_title=origin.get("title"),
                category=category,
            )
        )
    return read
