"""Normal forms of a headline: its text, identity, canonical URL, source name and time.

Two items are the same headline when their normalised texts or canonical URLs
are equal, so the day's list has no duplicates even when several feeds carry
one story under tracking links or aggregator redirects. The id is a hash of the
normalised text (never a text prefix, which collides for "Fed ..." stories).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import time
import unicodedata
from html.parser import HTMLParser
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from events.ids import sha256_hex

# Longer than any headline; a "title" beyond this is a page or an attack, skipped and counted.
MAX_HEADLINE_CHARS = 1000

# C0/C1 controls that are not whitespace, and the bidi embedding/override/isolate marks that can
# make a headline display as something else; whitespace controls are collapsed with the spaces.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_DISPLAY_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Tags that are HTML: anything else in angle brackets ("Apple <AAPL.O>") is the publisher's text.
_HTML_TAGS = frozenset(
    """a abbr acronym address area article aside audio b base bdi bdo big blink blockquote body br button
    canvas caption center cite code col colgroup data datalist dd del details dfn dialog dir div dl dt em embed
    fieldset figcaption figure font footer form frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html i
    iframe img input ins kbd label legend li link main map mark marquee menu meta meter nav nobr noembed
    noframes noscript object ol optgroup option output p param picture pre progress q rp rt ruby s samp script
    section select small source span strike strong style sub summary sup svg table tbody td template textarea
    tfoot th thead time title tr track tt u ul var video wbr""".split()  # noqa: SIM905
)
# Elements whose content is code or metadata, never headline text.
_HIDDEN = frozenset({"script", "style", "noscript", "template", "head", "title", "iframe", "object", "svg"})
_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s%$.&+-]")
_TRANSLATE = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-", "−": "-"})

# Query parameters that only say who sent the reader, never which page it is.
_TRACKING = {
    "fbclid",
    "gclid",
    "dclid",
    "gbraid",
    "wbraid",
    "msclkid",
    "yclid",
    "igshid",
    "mc_cid",
    "mc_eid",
    "_hsenc",
    "_hsmi",
    "mkt_tok",
    "ref",
    "ref_src",
    "cmpid",
    "ncid",
    "sr_share",
    "guccounter",
    "guce_referrer",
    "guce_referrer_sig",
    "soc_src",
    "soc_trk",
    "__source",
    "taid",
    "yptr",
    "ocid",
    "smid",
    "cid",
    "oref",
}
_TRACKING_PREFIXES = ("utm_", "__twitter", "_ga", "mtm_", "pk_")

# Parameters in which aggregators and link shorteners carry the real target.
_REDIRECT_PARAMS = ("url", "u", "q", "target", "dest", "destination", "redirect", "redirect_url", "link")

# Two-label public suffixes, so "feeds.bbci.co.uk" is named "bbci.co.uk", not "co.uk".
_SECOND_LEVEL = {
    "co.uk",
    "org.uk",
    "ac.uk",
    "gov.uk",
    "com.au",
    "net.au",
    "co.nz",
    "co.jp",
    "co.in",
    "co.za",
    "com.br",
    "com.cn",
    "com.hk",
    "com.sg",
    "co.kr",
    "com.mx",
    "com.tr",
}


def clean_text(raw: str, *, source_title: str | None = None) -> str:
    """Display text: HTML read as HTML once (see `html_to_text`), control and bidi-control
    characters removed, whitespace collapsed, composed (NFC) but never compatibility-folded:
    NFKC would record "3½%" as "31", FRACTION SLASH, "2%", and "…" as "...". Identity still folds (`text_key`).

    Aggregators append the publisher (" - Reuters"); that suffix is dropped when
    the item names the same publisher, so the story dedupes against the original.
    """
    text = _CONTROL.sub("", html_to_text(raw))
    text = _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()
    if source_title:
        for sep in (" - ", " | ", " – ", " — "):
            suffix = f"{sep}{source_title.strip()}"
            if text.endswith(suffix) and len(text) > len(suffix):
                text = text[: -len(suffix)].rstrip()
    return text


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag not in _HTML_TAGS:
            self.handle_data(self.get_starttag_text() or "")
        elif tag in _HIDDEN:
            self.hidden += 1
        else:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs) -> None:
        if tag not in _HTML_TAGS:
            self.handle_data(self.get_starttag_text() or "")
        elif not self.hidden:
            self.parts.append(" ")

    def parse_endtag(self, i: int) -> int:
        # HTMLParser hands handle_endtag the tag lower-cased; where it starts is kept so that a
        # non-HTML one ("</VOD.L>") is given back as the publisher wrote it.
        self._endtag_at = i
        return super().parse_endtag(i)

    def handle_endtag(self, tag: str) -> None:
        if tag not in _HTML_TAGS:
            at = getattr(self, "_endtag_at", None)
            end = self.rawdata.find(">", at) if at is not None else -1
            self.handle_data(self.rawdata[at : end + 1] if at is not None and end >= 0 else f"</{tag}>")
        elif tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        else:
            self.parts.append(" ")


def html_to_text(raw: str) -> str:
    """The text an HTML fragment shows, entities decoded exactly once.

    A real parser, not a pattern: "Gold < $2,000 as index > 105" and
    "Apple <AAPL.O>" keep their text (a lone "<" and a non-HTML tag are text),
    while tags go, comments go whole, and script/style bodies are dropped.
    """
    if "<" not in raw and "&" not in raw:
        return raw
    parser = _TextExtractor()
    parser.feed(raw)
    parser.close()
    return "".join(parser.parts)


def display_safe(text: str) -> str:
    """Text for a terminal: any control or bidi-control character shown as an escape, never sent raw."""
    return _DISPLAY_UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def text_key(text: str) -> str:
    """The form two texts must share to count as one headline."""
    folded = unicodedata.normalize("NFKC", text).translate(_TRANSLATE).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", folded)).strip(" .-")


def headline_id(text: str) -> str:
    return sha256_hex(text_key(text).encode())[:16]


def canonical_url(url: str | None) -> str | None:
    """The URL a headline points at, without tracking parameters or redirect wrappers.

    Returns None for anything that is not an absolute http(s) URL.
    """
    if not url:
        return None
    candidate = url.strip()
    for _ in range(3):
        target = _redirect_target(candidate)
        if target is None:
            break
        candidate = target
    try:
        parts = urlsplit(candidate)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower().rstrip(".")
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in _TRACKING and not k.lower().startswith(_TRACKING_PREFIXES)
    ]
    return urlunsplit((scheme, host, parts.path or "/", urlencode(query, doseq=True), ""))


def _redirect_target(url: str) -> str | None:
    try:
        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    except ValueError:
        return None
    for name in _REDIRECT_PARAMS:
        value = unquote(query.get(name, "")).strip()
        if value.lower().startswith(("http://", "https://")) and urlsplit(value).hostname:
            return value
    return None


def source_name(url: str | None) -> str | None:
    """A publisher's registrable domain: feeds.bbci.co.uk -> bbci.co.uk, search.cnbc.com -> cnbc.com."""
    if not url:
        return None
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    if not host:
        return None
    host = host.lower().rstrip(".")
    if ":" in host or host.replace(".", "").isdigit():
        return host
    labels = host.split(".")
    if len(labels) >= 3 and ".".join(labels[-2:]) in _SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def to_utc_iso(value: object) -> str | None:
    """A timestamp as ISO-8601 UTC (``2025-08-04T13:30:00Z``), or None when unreadable.

    Accepts datetimes, `time.struct_time` (feedparser's, already UTC), epoch
    seconds, ISO-8601 and RFC-2822 strings; a time without a zone is taken as UTC.
    """
    when: dt.datetime | None
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, time.struct_time):
        when = dt.datetime(*value[:6], tzinfo=dt.UTC)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            when = dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        when = _parse_time_text(value.strip())
    else:
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    try:
        when = when.astimezone(dt.UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        return None
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _parse_time_text(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
