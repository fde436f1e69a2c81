"""RSS/Atom over a real loopback HTTP server: formats, bad feeds, retries, 304s, limits."""

from pathlib import Path

import pytest
from feed_fixtures import server_module

from events.ids import sha256_hex
from varro.config import HeadlinesConfig
from varro.headlines.collect import PastDateError, check_source_dates, collect
from varro.headlines.feeds import FeedListError, load_feeds

FIXTURES = Path(__file__).parent / "fixtures" / "feeds"
TODAY = "2025-07-30"


@pytest.fixture
def server():
    srv = server_module().FeedServer(slow_s=4.0).start()
    yield srv
    srv.stop()


def config(tmp_path, server, general=(), markets=(), **overrides) -> HeadlinesConfig:
    lines = ["[general]"] + [f'{n} = "{server.url(p)}"' for n, p in general]
    lines += ["[markets]"] + [f'{n} = "{server.url(p)}"' for n, p in markets]
    feeds = tmp_path / "feeds.toml"
    feeds.write_text("\n".join(lines) + "\n")
    settings = dict(
        feeds_file=str(feeds),
        timeout_s=1.5,
        retries=1,
        backoff_s=0.01,
        max_bytes=200_000,
        user_agent="VarroTest/1.0 (+https://example.test/bot)",
    )
    settings.update(overrides)
    return HeadlinesConfig(**settings)


def by_source(result):
    return {r.source: r for r in result.reports}


def test_rss2_atom_and_rss1_are_normalised_and_deduplicated(tmp_path, server):
    cfg = config(
        tmp_path,
        server,
        markets=[
            ("rss2", "/feeds/rss2.xml"),
            ("atom", "/feeds/atom.xml"),
            ("rss1", "/feeds/rss1.xml"),
            ("agg", "/feeds/aggregator.xml"),
        ],
    )
    day = collect("rss", TODAY, cfg, today=TODAY)
    texts = {h.text: h for h in day.headlines}
    assert set(texts) == {
        "Fed holds rates steady, signals cuts could start in September",
        "Oil jumps 3% after OPEC+ signals slower output increases",
        "Apple (NASDAQ: AAPL) beats estimates as iPhone sales rise",
        "Euro slips to $1.14 as ECB holds rates",
        "Yen & Swiss franc gain as haven demand rises",
        "Bitcoin rises 2% to $118,000 as ETF inflows resume",
        "Copper falls 1.5% on weak China factory data",
        "Nvidia shares hit record as AI demand grows",
    }
    fed = texts["Fed holds rates steady, signals cuts could start in September"]
    assert fed.url == "https://www.example-markets.com/news/fed-holds-rates"
    assert texts["Oil jumps 3% after OPEC+ signals slower output increases"].published == "2025-07-30T19:10:00Z"
    assert texts["Euro slips to $1.14 as ECB holds rates"].published == "2025-07-30T07:15:00Z"
    assert texts["Apple (NASDAQ: AAPL) beats estimates as iPhone sales rise"].url.endswith("/news/apple-beats")
    nvidia = texts["Nvidia shares hit record as AI demand grows"]
    assert (nvidia.url, nvidia.source) == ("https://www.example-wire.com/tech/nvidia-record", "example-wire.com")
    assert fed.source == "127.0.0.1"
    rss2 = by_source(day)["rss2"]
    assert (rss2.status, rss2.fetched, rss2.kept, rss2.duplicates) == ("ok", 8, 3, 2)
    assert rss2.skipped == {"no link": 1, "no title": 1, "published before 2025-07-29": 1}
    assert all(r.status == "ok" and r.error is None for r in day.reports)
    assert day.payloads["atom"] == (FIXTURES / "atom.xml").read_bytes()
    assert server.hits("/feeds/rss2.xml")[0]["user-agent"] == "VarroTest/1.0 (+https://example.test/bot)"


def test_general_news_is_kept_only_when_finance_related(tmp_path, server):
    strict = collect("rss", TODAY, config(tmp_path, server, general=[("world", "/feeds/general.xml")]), today=TODAY)
    assert [h.text for h in strict.headlines] == [
        "Bank of England expected to cut rates next week",
        "Oil jumps 3% after OPEC+ signals slower output increases",
    ]
    assert all(h.category == "general" for h in strict.headlines)
    assert strict.reports[0].dropped_by_filter == 3
    everything = collect(
        "rss", TODAY, config(tmp_path, server, general=[("world", "/feeds/general.xml")], filter="off"), today=TODAY
    )
    assert len(everything.headlines) == 5 and everything.reports[0].dropped_by_filter == 0


def test_each_bad_feed_fails_alone_with_its_reason(tmp_path, server):
    cfg = config(
        tmp_path,
        server,
        markets=[
            ("good", "/feeds/rss1.xml"),
            ("broken", "/feeds/broken.xml"),
            ("html", "/feeds/page.html"),
            ("empty-body", "/empty-body"),
            ("empty-feed", "/feeds/empty.xml"),
            ("latin1", "/feeds/latin1.xml"),
            ("slow", "/slow"),
            ("huge", "/huge"),
            ("huge-declared", "/huge-declared"),
            ("gone", "/missing"),
            ("flaky", "/flaky"),
        ],
    )
    day = collect("rss", TODAY, cfg, today=TODAY)
    reports = by_source(day)
    assert reports["good"].status == "ok" and reports["good"].kept == 2
    assert reports["broken"].status == "failed" and reports["broken"].error.startswith("malformed feed XML")
    assert reports["html"].error == "served an HTML page, not a feed (text/html; charset=utf-8)"
    assert reports["empty-body"].error == "empty response: no feed document"
    assert (reports["empty-feed"].status, reports["empty-feed"].fetched) == ("ok", 0)
    assert reports["latin1"].status == "ok"
    assert "Café chain shares fall 4% on weak sales" in {h.text for h in day.headlines}
    assert reports["slow"].error == "no complete answer within 1.5s (gave up after 2 attempts)"
    assert reports["huge"].error == "feed exceeds headlines.max_bytes=200000; download aborted"
    assert reports["huge-declared"].error == "feed is 52428800 bytes, over headlines.max_bytes=200000"
    assert reports["gone"].error == "HTTP 404 Not Found"
    assert len(server.hits("/missing")) == 1, "a 404 is not retried"
    assert reports["flaky"].status == "ok" and len(server.hits("/flaky")) == 2
    # the flaky feed repeats the good one's stories: counted as duplicates, not lost
    assert reports["flaky"].duplicates == 2
    failed = {name for name, r in reports.items() if r.status == "failed"}
    assert failed == {"broken", "html", "empty-body", "slow", "huge", "huge-declared", "gone"}
    assert day.payloads["broken"] == (FIXTURES / "broken.xml").read_bytes()


def test_conditional_get_reuses_the_recorded_payload_on_304(tmp_path, server):
    cfg = config(tmp_path, server, markets=[("fx", "/etag")])
    state = tmp_path / "state.json"
    kept: dict[str, bytes] = {}

    def recall(sha):
        return kept.get(sha)

    first = collect("rss", TODAY, cfg, today=TODAY, state_path=state, recall=recall)
    kept[sha256_hex(first.payloads["fx"])] = first.payloads["fx"]
    assert "if-none-match" not in server.hits("/etag")[0]
    second = collect("rss", TODAY, cfg, today=TODAY, state_path=state, recall=recall)
    assert server.hits("/etag")[1]["if-none-match"] == '"v1"'
    assert second.reports[0].status == "not_modified"
    assert second.headlines == first.headlines and second.payloads == first.payloads
    kept.clear()  # the earlier payload is gone: fetch it whole again rather than record an empty feed
    third = collect("rss", TODAY, cfg, today=TODAY, state_path=state, recall=recall)
    assert "if-none-match" not in server.hits("/etag")[-1]
    assert third.reports[0].status == "ok" and third.headlines == first.headlines


def test_rss_for_another_day_is_refused_before_any_request(tmp_path, server):
    cfg = config(tmp_path, server, markets=[("rss2", "/feeds/rss2.xml")])
    for day in ("2025-07-29", "2025-07-31"):
        with pytest.raises(PastDateError, match=f"cannot be fetched for {day}.*file source"):
            collect("rss", day, cfg, today=TODAY)
    assert server.requests == []


def test_source_dates_are_checked_before_anything_is_recorded():
    check_source_dates("rss", [TODAY], today=TODAY)
    check_source_dates("files", ["2020-01-01", TODAY], today=TODAY)
    with pytest.raises(PastDateError, match="cannot be fetched for 2025-07-28"):
        check_source_dates("rss", [TODAY, "2025-07-28", "2025-07-27"], today=TODAY)
    with pytest.raises(ValueError, match="invalid date"):
        check_source_dates("sample", ["2025-7-1"], today=TODAY)


def test_bundled_feed_list_has_the_fourteen_original_feeds():
    feeds = load_feeds()
    assert len(feeds) == 14 and len({f.name for f in feeds}) == 14
    assert {f.category for f in feeds} == {"general", "markets"}
    assert all(f.url.startswith("https://") for f in feeds)


@pytest.mark.parametrize(
    "text, error",
    [
        ("[news]\na = 'https://x.example.com'\n", r"\[news\] is not a category"),
        ("[markets]\na = 'ftp://x.example.com'\n", r"markets.a = 'ftp://x.example.com' is not an http\(s\) URL"),
        ("[general]\na = 'https://x.example.com'\n[markets]\na = 'https://y.example.com'\n", r"'a' is used twice"),
        ("[markets]\n", r"names no feeds"),
        ("[markets\n", r"not valid TOML"),
    ],
)
def test_bad_feed_lists_are_refused_with_the_reason(tmp_path, text, error):
    path = tmp_path / "feeds.toml"
    path.write_text(text)
    with pytest.raises(FeedListError, match=error):
        load_feeds(path)
