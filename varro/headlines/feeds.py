"""RSS/Atom feeds over HTTP, one feed at a time, each failure contained in its feed.

A fetch is polite (descriptive User-Agent, conditional GET with the ETag and
Last-Modified of the last answer) and bounded (timeout per attempt, a few
retries with exponential backoff for timeouts, 429 and 5xx, a byte limit
checked while streaming). Whatever goes wrong ends as a failed `SourceRead`
with the reason; it never raises into the day's other feeds.
"""

from __future__ import annotations

import json
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import httpx

from events.errors import PermanentError
from events.ids import sha256_hex
from varro.artifacts import atomic_write
from varro.config import HeadlinesConfig
from varro.headlines.items import CATEGORIES, Category, RawItem, SourceRead
from varro.headlines.normalize import source_name

BUNDLED_FEEDS = Path(__file__).resolve().parent.parent / "data" / "feeds.toml"

# Feeds that carry other publishers' stories: items are named by their own publisher.
AGGREGATOR_HOSTS = {"news.google.com", "news.yahoo.com", "feedproxy.google.com"}

# feedparser flags these but parses the document correctly anyway.
_BENIGN_BOZO = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)


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
    pass


class _Fatal(Exception):
    pass


def fetch_feed(
    client: httpx.Client,
    feed: Feed,
    cfg: HeadlinesConfig,
    *,
    state: FeedState | None = None,
    recall: Callable[[str], bytes | None] | None = None,
) -> SourceRead:
    """Download and parse one feed; any failure is a failed SourceRead naming the reason."""
    known = state.get(feed.url) if state is not None and recall is not None else {}
    status = "ok"
    try:
        code, headers, body = _download_with_retries(client, feed.url, cfg, known)
        if code == 304:
            previous = recall(known["sha256"]) if recall is not None and known.get("sha256") else None
            if previous is None:
                code, headers, body = _download_with_retries(client, feed.url, cfg, {})
            else:
                status, body = "not_modified", previous
    except _Fatal as exc:
        return SourceRead.failed(feed.name, feed.category, str(exc))
    read = parse_feed(body, feed, content_type=headers.get("content-type", ""))
    if read.status == "ok":
        read.status = status
        if state is not None and status == "ok":
            state.remember(feed.url, headers, sha256_hex(body))
    return read


def _download_with_retries(
    client: httpx.Client, url: str, cfg: HeadlinesConfig, known: dict[str, str]
) -> tuple[int, httpx.Headers, bytes]:
    headers = {
        "User-Agent": cfg.user_agent,
        "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5",
    }
    if known.get("etag"):
        headers["If-None-Match"] = known["etag"]
    if known.get("last_modified"):
        headers["If-Modified-Since"] = known["last_modified"]
    attempts = max(1, cfg.retries + 1)
    attempt = 0
    while True:
        try:
            return _download(client, url, headers, cfg)
        except _Retryable as exc:
            attempt += 1
            if attempt >= attempts:
                raise _Fatal(f"{exc} (gave up after {attempts} attempt{'s' if attempts > 1 else ''})") from None
            time.sleep(cfg.backoff_s * 2 ** (attempt - 1))


def _download(
    client: httpx.Client, url: str, headers: dict[str, str], cfg: HeadlinesConfig
) -> tuple[int, httpx.Headers, bytes]:
    deadline = time.monotonic() + cfg.timeout_s
    try:
        with client.stream("GET", url, headers=headers, timeout=cfg.timeout_s, follow_redirects=True) as resp:
            code = resp.status_code
            if code == 304:
                return code, resp.headers, b""
            if code == 429 or code >= 500:
                raise _Retryable(f"HTTP {code} {resp.reason_phrase}")
            if code != 200:
                raise _Fatal(f"HTTP {code} {resp.reason_phrase}")
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cfg.max_bytes:
                raise _Fatal(f"feed is {int(declared)} bytes, over headlines.max_bytes={cfg.max_bytes}")
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > cfg.max_bytes:
                    raise _Fatal(f"feed exceeds headlines.max_bytes={cfg.max_bytes}; download aborted")
                if time.monotonic() > deadline:
                    raise _Retryable(f"download took longer than {cfg.timeout_s}s")
                chunks.append(chunk)
            return code, resp.headers, b"".join(chunks)
    except httpx.TimeoutException:
        raise _Retryable(f"no answer within {cfg.timeout_s}s") from None
    except httpx.TransportError as exc:
        raise _Retryable(f"connection failed: {exc or type(exc).__name__}") from None
    except httpx.HTTPError as exc:
        raise _Fatal(f"HTTP error: {exc or type(exc).__name__}") from None


def parse_feed(body: bytes, feed: Feed, *, content_type: str = "") -> SourceRead:
    """RSS 0.9x/1.0/2.0 or Atom bytes into raw items; anything else fails with the reason."""
    name, category = feed.name, feed.category
    if not body.strip():
        return SourceRead.failed(name, category, "empty response: no feed document", body)
    headers = {"content-type": content_type or "application/xml", "content-location": feed.url}
    parsed = feedparser.parse(body, response_headers=headers)
    problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
    if not parsed.get("version"):
        head = body[:512].lstrip().lower()
        if "html" in content_type.lower() or head.startswith((b"<!doctype html", b"<html")):
            served = content_type or "no content-type"
            return SourceRead.failed(name, category, f"served an HTML page, not a feed ({served})", body)
        reason = f": {problem}" if problem else ""
        return SourceRead.failed(name, category, f"not an RSS or Atom feed{reason}", body)
    if problem is not None and not isinstance(problem, _BENIGN_BOZO):
        return SourceRead.failed(name, category, f"malformed feed XML: {problem}", body)
    host = urlsplit(feed.url).hostname or ""
    read = SourceRead(
        name=name,
        category=category,
        payload=body,
        default_source=None if host in AGGREGATOR_HOSTS else source_name(feed.url),
    )
    for entry in parsed.entries:
        origin = entry.get("source") or {}
        read.items.append(
            RawItem(
                title=entry.get("title"),
                link=entry.get("link"),
                published=entry.get("published_parsed") or entry.get("updated_parsed"),
                source=source_name(origin.get("href")),
                source_title=origin.get("title"),
                category=category,
            )
        )
    return read
