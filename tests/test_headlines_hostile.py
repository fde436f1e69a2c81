"""Hostile feed servers on loopback: every fetch ends by its deadline, within its byte limit, on http(s).

Bounds are generous (the point is that the fetch ends at all, and fails for the
right reason); each protection removed makes its test hang past the bound,
blow the memory bound, or record the wrong outcome.
"""

import threading
import time
import tracemalloc
import urllib.request
from pathlib import Path

import pytest
from feed_fixtures import server_module

from varro.config import HeadlinesConfig
from varro.headlines.collect import collect
from varro.headlines.decoding import BoundedDecoder, DecodedTooLarge, DecodingError
from varro.headlines.feeds import retry_after_s

FIXTURES = Path(__file__).parent / "fixtures" / "feeds"
TODAY = "2025-07-30"


@pytest.fixture
def server():
    srv = server_module().FeedServer(drip_s=0.3).start()
    yield srv
    srv.stop()


def config(tmp_path, server, feeds, **overrides) -> HeadlinesConfig:
    lines = ["[markets]"] + [f'{n} = "{server.url(p) if p.startswith("/") else p}"' for n, p in feeds]
    (tmp_path / "feeds.toml").write_text("\n".join(lines) + "\n")
    settings = dict(feeds_file=str(tmp_path / "feeds.toml"), timeout_s=1.5, retries=0, backoff_s=0.01)
    settings.update(overrides)
    return HeadlinesConfig(**settings)


def fetch(cfg):
    start = time.monotonic()
    day = collect("rss", TODAY, cfg, today=TODAY)
    return {r.source: r for r in day.reports}, time.monotonic() - start, day


def test_a_slowloris_server_is_cut_at_the_attempt_deadline(tmp_path, server):
    """Headers arriving one byte every 0.3 s never trip a 1.5 s read timeout; the deadline cuts them."""
    cfg = config(tmp_path, server, [("loris", "/slowloris"), ("drip", "/slow-body"), ("good", "/feeds/rss1.xml")])
    reports, elapsed, day = fetch(cfg)
    assert reports["loris"].error == "no complete answer within 1.5s (gave up after 1 attempt)"
    assert reports["drip"].error == "no complete answer within 1.5s (gave up after 1 attempt)"
    assert reports["good"].status == "ok" and len(day.headlines) == 2
    assert elapsed < 30, f"the drip lasts 60 s; the fetch took {elapsed:.1f} s"


def test_the_day_deadline_ends_every_feed_retries_and_waits_included(tmp_path, server):
    feeds = [(f"loris{n}", "/slowloris") for n in range(3)] + [("late", "/retry-after/20")]
    cfg = config(tmp_path, server, feeds, timeout_s=1.5, retries=50, deadline_s=2.5, retry_after_max_s=60)
    reports, elapsed, _ = fetch(cfg)
    for n in range(3):
        error = reports[f"loris{n}"].error
        assert "day's fetch deadline (headlines.deadline_s=2.5)" in error, error
    assert reports["late"].error == "HTTP 429 Too Many Requests, and a retry in 20s would pass the day's fetch deadline"
    assert elapsed < 30, f"each slowloris would take 51 attempts x 1.5 s; the day took {elapsed:.1f} s"


def test_a_double_gzip_bomb_stops_at_the_decoded_limit_with_bounded_memory(tmp_path, server):
    """492 bytes on the wire, 200 MB decoded: stopped at 200 kB, peak memory far below the bomb."""
    feeds = [("bomb", "/gzip-bomb"), ("gz", "/gzip"), ("deflate", "/deflate")]
    cfg = config(tmp_path, server, feeds, max_bytes=200_000, timeout_s=20)
    with urllib.request.urlopen(server.url("/gzip-bomb"), timeout=60) as warm:  # the server builds it once
        assert len(warm.read()) < 1000
    tracemalloc.start()
    try:
        reports, _, day = fetch(cfg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reports["bomb"].error == "feed exceeds headlines.max_bytes=200000 once decoded; download aborted"
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MiB while decoding a 200 MB bomb with a 200 kB limit"
    assert reports["gz"].status == "ok" and reports["deflate"].status == "ok"
    assert day.payloads["gz"] == (FIXTURES / "rss1.xml").read_bytes() == day.payloads["deflate"]


def test_bounded_decoder_layers_and_refusals():
    import gzip
    import zlib

    data = b"x" * 100_000
    twice = gzip.compress(zlib.compress(data))
    decoder = BoundedDecoder("deflate, gzip", limit=100_000)
    assert decoder.feed(twice[:10]) + decoder.feed(twice[10:]) + decoder.finish() == data
    with pytest.raises(DecodedTooLarge):
        BoundedDecoder("gzip", limit=99_999).feed(gzip.compress(data))
    two_members = gzip.compress(b"a" * 10) + gzip.compress(b"b" * 10)
    assert BoundedDecoder("gzip", limit=100).feed(two_members) == b"a" * 10 + b"b" * 10
    with pytest.raises(DecodingError, match="unsupported Content-Encoding 'br'"):
        BoundedDecoder("br", limit=10)
    with pytest.raises(DecodingError, match="4 layers"):
        BoundedDecoder("gzip, gzip, gzip, gzip", limit=10)
    with pytest.raises(DecodingError, match="corrupt gzip data"):
        BoundedDecoder("gzip", limit=10).feed(b"not gzip at all")


def test_redirects_follow_http_only_within_the_hop_limit_and_record_the_final_url(tmp_path, server):
    other_port = f"http://127.0.0.1:{server.httpd.server_address[1] + 1}/feeds/rss1.xml"
    feeds = [
        ("two-hops", "/redirect/2"),
        ("too-many", "/redirect/9"),
        ("to-file", "/redirect-to?file:///etc/passwd"),
        ("to-ftp", "/redirect-to?ftp://127.0.0.1/feed.xml"),
        ("to-port", "/redirect-to?" + other_port),
    ]
    cfg = config(tmp_path, server, feeds, max_redirects=3, retries=2)
    reports, _, day = fetch(cfg)
    assert reports["two-hops"].status == "ok" and len(day.headlines) == 2
    assert reports["too-many"].error.startswith("more than headlines.max_redirects=3 redirects")
    assert reports["to-file"].error == (
        "HTTP 302 redirect to 'file:///etc/passwd' refused: only http(s) URLs are followed"
    )
    assert "only http(s) URLs are followed" in reports["to-ftp"].error
    assert f"port {server.httpd.server_address[1] + 1} is neither the feed's nor standard" in reports["to-port"].error
    assert len(server.hits("/redirect-to?file:///etc/passwd")) == 1, "a refused redirect is not retried"
    assert len(server.hits("/redirect/9")) == 1
    assert [p for p, _ in server.requests if p.startswith("/redirect/")].count("/redirect/0") == 1


def test_the_final_url_is_recorded_in_the_source_report(tmp_path, server):
    cfg = config(tmp_path, server, [("moved", "/redirect/1"), ("direct", "/feeds/rss1.xml")])
    seen = {}
    day = collect("rss", TODAY, cfg, today=TODAY, on_source=lambda read: seen.setdefault(read.name, read.final_url))
    assert seen == {"moved": server.url("/feeds/rss1.xml"), "direct": None}
    assert {r.source: r.final_url for r in day.reports} == seen
    assert all(r.status == "ok" and r.error is None for r in day.reports)


def test_retry_after_is_honoured_up_to_its_bound(tmp_path, server):
    cfg = config(
        tmp_path,
        server,
        [("polite", "/retry-after/1"), ("greedy", "/retry-after/3600")],
        retries=2,
        retry_after_max_s=5,
        backoff_s=0.01,
    )
    reports, _, _ = fetch(cfg)
    assert reports["polite"].status == "ok"
    first, second = [t for p, t in server.times if p == "/retry-after/1"]
    assert second - first >= 0.9, "the retry came before the Retry-After second was up"
    assert reports["greedy"].error == (
        "HTTP 429 Too Many Requests, Retry-After 3600s is over headlines.retry_after_max_s=5; not retried"
    )
    assert len(server.hits("/retry-after/3600")) == 1


def test_retry_after_header_forms():
    assert retry_after_s("120") == 120.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None


def test_a_megabyte_title_is_skipped_not_recorded(tmp_path, server):
    cfg = config(tmp_path, server, [("long", "/long-title")], max_bytes=3_000_000)
    reports, _, day = fetch(cfg)
    assert [h.text for h in day.headlines] == ["Stocks rise"]
    assert reports["long"].skipped == {"headline over 1000 characters": 1}


def test_a_resolver_that_never_answers_is_cut_at_the_attempt_deadline(tmp_path, server, monkeypatch):
    """getaddrinfo takes no timeout; a hung DNS lookup must not hold the feed past its deadline.

    A real hanging DNS server cannot run here, so the process's resolver is replaced by one that
    hangs for the names of `.hang.test` (for 60 s, or until the test ends), knows no `.invalid`
    name, resolves `.good.test` to loopback and the rest as the system does.
    """
    import socket

    real, release = socket.getaddrinfo, threading.Event()

    def resolver(host, *args, **kwargs):
        if str(host).endswith(".hang.test"):
            release.wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if str(host).endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real("127.0.0.1" if str(host).endswith(".good.test") else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    port = server.httpd.server_address[1]
    feeds = [
        ("hung", f"http://feeds.hang.test:{port}/feeds/rss1.xml"),
        ("named", f"http://feeds.good.test:{port}/feeds/rss2.xml"),
        ("loopback", "/feeds/atom.xml"),
        ("nowhere", "http://feeds.nowhere.invalid/rss"),
    ]
    cfg = config(tmp_path, server, feeds, timeout_s=1.5, retries=1, deadline_s=4)
    try:
        reports, elapsed, _ = fetch(cfg)
    finally:
        release.set()
    assert reports["hung"].status == "failed" and "no complete answer within 1.5s" in reports["hung"].error
    assert reports["named"].status == "ok" and reports["loopback"].status == "ok"
    assert reports["nowhere"].error.startswith("connection failed: cannot resolve feeds.nowhere.invalid")
    assert elapsed < cfg.deadline_s + 10, f"the lookup hangs 60 s; the fetch took {elapsed:.1f} s"


def test_a_day_of_hostile_feeds_ends_by_its_deadline_within_its_memory_bound(tmp_path, server, monkeypatch):
    """Every hostile behaviour at once, retries allowed: the day ends by deadline_s (plus slack for a
    loaded machine) and its peak Python memory stays within a bound set by max_bytes, far below what
    any one server offers (a 50 MB stream, a 200 MB bomb, a 2 MB title), and the good feed still counts."""
    import socket

    real, release = socket.getaddrinfo, threading.Event()

    def resolver(host, *args, **kwargs):
        if str(host).endswith(".hang.test"):
            release.wait(60)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    port = server.httpd.server_address[1]
    hostile = ["/slowloris", "/slow-body", "/gzip-bomb", "/huge", "/huge-declared", "/long-title"]
    hostile += ["/redirect/50", "/retry-after/20", f"http://dns.hang.test:{port}/feeds/rss1.xml"]
    feeds = [(f"h{n}", path) for n, path in enumerate(hostile)] + [("good", "/feeds/rss1.xml")]
    cfg = config(tmp_path, server, feeds, timeout_s=2, deadline_s=4, retries=3, max_bytes=500_000)
    with urllib.request.urlopen(server.url("/gzip-bomb"), timeout=60) as warm:  # the server builds it once
        warm.read()
    tracemalloc.start()
    try:
        reports, elapsed, day = fetch(cfg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        release.set()
    assert [reports[f"h{n}"].status for n in range(len(hostile))] == ["failed"] * len(hostile)
    assert reports["good"].status == "ok" and len(day.headlines) == 2
    assert elapsed < cfg.deadline_s + 8, f"deadline_s={cfg.deadline_s:g}; the day took {elapsed:.1f} s"
    bound = 16 * cfg.max_bytes + 16 * 2**20  # a few copies of one limit's bytes for each of 8 parallel feeds
    assert peak < bound, f"peak {peak / 2**20:.1f} MiB, bound {bound / 2**20:.1f} MiB"


def test_a_feed_too_big_to_parse_by_the_deadline_fails_without_holding_up_the_day(tmp_path, server):
    """A well-formed 8 MB feed of tiny items takes feedparser many seconds of CPU, which no socket
    deadline covers: the day still ends by deadline_s, the feed failing with that reason."""
    size = 8_000_000
    with urllib.request.urlopen(server.url(f"/big-feed/{size}"), timeout=120) as warm:  # built once, not timed
        served = len(warm.read())
    feeds = [("big", f"/big-feed/{size}"), ("good", "/feeds/rss1.xml")]
    cfg = config(tmp_path, server, feeds, timeout_s=10, deadline_s=2.5, max_bytes=size + 1000)
    try:
        reports, elapsed, day = fetch(cfg)
    finally:  # the abandoned parse ends by itself; waited for here only so it slows no later test
        for thread in threading.enumerate():
            if thread.name == "parse big":
                assert thread.daemon
                thread.join(300)
    assert reports["big"].error == (
        f"parsing its {served:,} bytes did not finish by the day's fetch deadline (headlines.deadline_s=2.5)"
    )
    assert reports["good"].status == "ok" and len(day.headlines) == 2
    assert elapsed < cfg.deadline_s + 5, f"deadline_s=2.5; the day took {elapsed:.1f} s"


def test_assembly_ends_by_the_day_deadline_too(tmp_path, server, monkeypatch):
    """Items parsed in time but not yet assembled at the deadline are counted, not assembled: the
    day ends by deadline_s. Assembly is made slow (10 ms a headline) so 1,500 items would take 15 s."""
    from varro.headlines import collect as collect_module

    clean = collect_module.clean_text
    monkeypatch.setattr(collect_module, "clean_text", lambda *a, **k: time.sleep(0.01) or clean(*a, **k))
    cfg = config(tmp_path, server, [("good", "/feeds/rss1.xml"), ("big", "/big-feed/150000")], deadline_s=3)
    reports, elapsed, _ = fetch(cfg)
    late = "not assembled by the day's fetch deadline (headlines.deadline_s=3)"
    big = reports["big"]
    assert reports["good"].kept == 2 and big.status == "ok"
    assert big.skipped[late] > 0 and big.kept + sum(big.skipped.values()) + big.duplicates == big.fetched > 1000
    assert elapsed < 10, f"deadline_s=3; the day took {elapsed:.1f} s"
