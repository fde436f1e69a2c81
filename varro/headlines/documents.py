"""Reading a feed document faithfully: its charset, its recoverable XML slips, its dates.

feedparser parses almost anything, but some of its recoveries change what the
publisher wrote: one stray cp1252 byte in a UTF-8 feed makes it re-read the
whole document as cp1252 (every non-ASCII title garbled, reported only as a
`CharacterEncodingOverride`), and an impossible date such as 2026-13-45 is
rolled over to 2027-01-01. Here the stray bytes alone are read as cp1252, and
impossible dates are refused (the item is kept undated and the reason counted).
Which XML problems are slips worth keeping the items for is decided here too.
"""

from __future__ import annotations

import codecs
import re
from xml.sax import SAXParseException

import feedparser

from varro.headlines.normalize import to_utc_iso

# expat's messages for slips a publisher makes while the document stays readable (an HTML entity
# such as &nbsp; or &rsquo;, a raw "&" in a link, one control character). Anything else, such as
# a truncated document or an entity-amplification attack, fails the feed.
RECOVERABLE_XML = ("undefined entity", "not well-formed (invalid token)")
_ISO_DAY = re.compile(r"\s*\d{4}-\d{1,2}-\d{1,2}")


def _stray_as_cp1252(error: UnicodeDecodeError) -> tuple[str, int]:
    bad = error.object[error.start : error.end]
    return bad.decode("cp1252", errors="replace"), error.end


codecs.register_error("varro-stray-cp1252", _stray_as_cp1252)


def repair_utf8(body: bytes) -> tuple[bytes, int]:
    """`body` as valid UTF-8, bytes that are not UTF-8 read one by one as cp1252; and how many there were."""
    strays = len(body) - len(body.decode("utf-8", errors="ignore").encode("utf-8"))
    return body.decode("utf-8", errors="varro-stray-cp1252").encode("utf-8"), strays


def declared_utf8_override(problem: object) -> bool:
    """feedparser gave up on a declared UTF-8 and re-read the whole document in another charset."""
    return isinstance(problem, feedparser.CharacterEncodingOverride) and "declared as utf-8" in str(problem).lower()


def recoverable(problem: object, body: bytes) -> bool:
    """An XML slip after which feedparser's items are still what the publisher wrote."""
    if not isinstance(problem, SAXParseException) or b"<!ENTITY" in body:
        return False
    return problem.getMessage() in RECOVERABLE_XML


def entry_time(entry: dict) -> tuple[object, str | None]:
    """An entry's publication time (published, else updated), and a note when a date was refused.

    Our own strict reading comes first; feedparser's parse is used only for
    formats we cannot read, and never for an ISO-looking date we found impossible.
    """
    for raw_key, parsed_key in (("published", "published_parsed"), ("updated", "updated_parsed")):
        raw, parsed = entry.get(raw_key), entry.get(parsed_key)
        if not raw and parsed is None:
            continue
        if isinstance(raw, str):
            ours = to_utc_iso(raw)
            if ours is not None:
                return ours, None
            if _ISO_DAY.match(raw):
                return None, "impossible date, kept undated"
        if parsed is not None:
            return parsed, None
        return None, None
    return None, None
