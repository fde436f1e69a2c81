"""Normal forms: a headline's id, canonical URL, publisher name and UTC time."""

import datetime as dt
import time

import pytest

from varro.headlines.normalize import (
    canonical_url,
    clean_text,
    display_safe,
    headline_id,
    source_name,
    text_key,
    to_utc_iso,
)


@pytest.mark.parametrize(
    "raw, canonical",
    [
        ("https://www.example.com/a?utm_source=rss&utm_medium=feed&id=7", "https://www.example.com/a?id=7"),
        ("https://example.com/a?fbclid=xyz&gclid=1&page=2#comments", "https://example.com/a?page=2"),
        ("HTTPS://Example.COM:443/path", "https://example.com/path"),
        ("http://example.com:8080/x?mc_cid=1", "http://example.com:8080/x"),
        (
            "https://news.google.com/rss/articles/CBMi?oc=5&url=https%3A%2F%2Fwww.example-wire.com%2Fa%3Futm_source%3Dg",
            "https://www.example-wire.com/a",
        ),
        ("https://www.google.com/url?q=https://example.com/story&sa=D", "https://example.com/story"),
        ("  https://example.com  ", "https://example.com/"),
    ],
)
def test_canonical_url_drops_tracking_and_unwraps_redirects(raw, canonical):
    assert canonical_url(raw) == canonical


@pytest.mark.parametrize("raw", [None, "", "not a url", "ftp://example.com/f", "javascript:alert(1)", "http://[::1"])
def test_canonical_url_refuses_non_http(raw):
    assert canonical_url(raw) is None


@pytest.mark.parametrize(
    "url, name",
    [
        ("https://feeds.bbci.co.uk/news/business/rss.xml", "bbci.co.uk"),
        ("https://search.cnbc.com/rs/search/combinedcms/view.xml", "cnbc.com"),
        ("https://www.reuters.com/markets/", "reuters.com"),
        ("https://rss.example-news.com/feed", "example-news.com"),
        ("https://feeds.a.dj.com/rss/RSSMarketsMain.xml", "dj.com"),
        ("http://127.0.0.1:8000/feed", "127.0.0.1"),
        ("nonsense", None),
    ],
)
def test_source_name_is_the_registrable_domain(url, name):
    assert source_name(url) == name


def test_times_become_utc_iso():
    assert to_utc_iso("Wed, 30 Jul 2025 15:10:00 -0400") == "2025-07-30T19:10:00Z"
    assert to_utc_iso("2025-07-30T09:15:00+02:00") == "2025-07-30T07:15:00Z"
    assert to_utc_iso("2025-07-30T09:15:00Z") == "2025-07-30T09:15:00Z"
    assert to_utc_iso("2025-07-30 09:15") == "2025-07-30T09:15:00Z"
    assert to_utc_iso(time.struct_time((2025, 7, 30, 18, 5, 0, 2, 211, 0))) == "2025-07-30T18:05:00Z"
    assert (
        to_utc_iso(dt.datetime(2025, 7, 30, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))))
        == "2025-07-31T04:30:00Z"
    )
    assert to_utc_iso(1753869600) == "2025-07-30T10:00:00Z"
    assert to_utc_iso("yesterday-ish") is None
    assert to_utc_iso(None) is None


def test_headline_id_is_a_hash_of_normalised_text_not_a_prefix():
    a = headline_id("Fed holds rates steady, signals September cut")
    assert a == headline_id("  FED holds rates steady,  signals September cut ")
    assert a == headline_id("Fed holds rates steady, signals September cut.")
    assert len(a) == 16 and int(a, 16) >= 0
    # same first 20 characters, different stories: the original's prefix ids collided here
    assert headline_id("Fed holds rates steady, signals September cut") != headline_id(
        "Fed holds rates steady, dissent from two governors"
    )
    assert headline_id("Oil rises 3%") != headline_id("Oil rises 4%")


def test_clean_text_decodes_markup_and_drops_the_aggregator_suffix():
    assert (
        clean_text("Yen &amp; franc gain as <b>haven</b>\n demand  rises") == "Yen & franc gain as haven demand rises"
    )
    assert clean_text("Nvidia hits record - Example Wire", source_title="Example Wire") == "Nvidia hits record"
    assert clean_text("Nvidia hits record - Example Wire") == "Nvidia hits record - Example Wire"
    assert text_key("“Quoted” – dash") == text_key('"quoted" - dash')
    # identity still folds what display keeps, so a full-width copy of a story is a duplicate
    assert headline_id(clean_text("\uff21\uff22\uff23 rises \uff13%")) == headline_id(clean_text("ABC rises 3%"))


@pytest.mark.parametrize(
    "raw, text",
    [
        ("Gold < $2,000 as dollar index > 105", "Gold < $2,000 as dollar index > 105"),
        ("Apple <AAPL.O> rises 2% after results", "Apple <AAPL.O> rises 2% after results"),
        ("Shares in <VOD.L> and </VOD.L> fall", "Shares in <VOD.L> and </VOD.L> fall"),
        ("&amp;amp;lt;script&amp;amp;gt; stays text", "&amp;lt;script&amp;gt; stays text"),
        ("&lt;script&gt;alert(1)&lt;/script&gt; Oil rises", "<script>alert(1)</script> Oil rises"),
        ("<script>alert(1)</script>Oil <style>p{}</style>rises", "Oil rises"),
        ("Fed <!-- a comment --> holds <b>rates</b>", "Fed holds rates"),
        ("Stocks<br/>rally", "Stocks rally"),
        ("S&P 500 rises; AT&T &amp; Verizon", "S&P 500 rises; AT&T & Verizon"),
        ("Oil\x00 rises\x07\x1b[31m 2%\u202e", "Oil rises[31m 2%"),
        ("\u2066Fed\u2069 holds\u200f", "Fed holds"),
        # composed, never compatibility-folded: NFKC would give "31\u20442%", "...", "TM", "="
        ("Cafe\u0301 prices up 3½% … Acme™", "Café prices up 3½% … Acme™"),
        ("円相場、1ドル\uff1d150円台", "円相場、1ドル\uff1d150円台"),
    ],
)
def test_clean_text_reads_html_once_and_keeps_the_publishers_text(raw, text):
    assert clean_text(raw) == text


def test_display_safe_escapes_controls_for_the_terminal():
    assert display_safe("Oil\x1b[2J rises\u202e") == "Oil\\x1b[2J rises\\u202e"
    assert display_safe("Café ★ rises") == "Café ★ rises"


@pytest.mark.parametrize(
    "raw, canonical",
    [
        ("http://[::1]:18080/feed?utm_source=x", "http://[::1]:18080/feed"),
        ("https://[2001:db8::1]/a", "https://[2001:db8::1]/a"),
    ],
)
def test_ipv6_links_keep_their_brackets(raw, canonical):
    assert canonical_url(raw) == canonical
