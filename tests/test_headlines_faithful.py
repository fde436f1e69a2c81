"""What is recorded is what the publisher wrote: charsets, XML slips, markup, controls, dates, formats.

Every feed here is served by the loopback FeedServer from tests/fixtures/feeds.
"""

import pytest
from feed_fixtures import server_module

from varro.config import HeadlinesConfig
from varro.headlines.collect import collect

TODAY = "2025-07-30"


@pytest.fixture(scope="module")
def server():
    srv = server_module().FeedServer().start()
    yield srv
    srv.stop()


def fetch(tmp_path, server, *names):
    lines = ["[markets]"] + [f'{n.replace(".", "_")} = "{server.url("/feeds/" + n)}"' for n in names]
    (tmp_path / "feeds.toml").write_text("\n".join(lines) + "\n")
    cfg = HeadlinesConfig(feeds_file=str(tmp_path / "feeds.toml"), timeout_s=5, retries=0, filter="off")
    day = collect("rss", TODAY, cfg, today=TODAY)
    return day, {r.source: r for r in day.reports}


def test_one_stray_cp1252_byte_costs_neither_the_charset_nor_the_feed(tmp_path, server):
    day, reports = fetch(tmp_path, server, "stray-cp1252.xml")
    assert [h.text for h in day.headlines] == ["Euro falls 1% to €1.08 — ECB holds rates", "Fed’s Powell holds rates"]
    report = reports["stray-cp1252_xml"]
    assert report.status == "ok" and report.error is None
    assert report.warnings == {"1 byte not UTF-8, read as cp1252": 1}


def test_a_charset_feedparser_had_to_guess_is_not_recorded_as_good(tmp_path, server):
    day, reports = fetch(tmp_path, server, "mislabelled-sjis.xml", "rss1.xml")
    report = reports["mislabelled-sjis_xml"]
    assert report.status == "failed" and report.error == (
        "charset cannot be trusted: document declared as shift_jis, but parsed as windows-1252"
    )
    assert len(day.headlines) == 2, "the other feed is unaffected"


def test_recoverable_xml_slips_keep_their_items_and_say_so(tmp_path, server):
    day, reports = fetch(tmp_path, server, "slips.xml", "broken.xml", "laughs.xml", "declared-entity.xml")
    assert [(h.text, h.url) for h in day.headlines] == [
        ("Fed holds rates, Powell’s view", "https://slips.example.com/a?x=1&y=2"),
        ("Oil rises 2% on supply", "https://slips.example.com/b"),
        ("Gold rises 1%", "http://[::1]:18080/gold"),
    ]
    slips = reports["slips_xml"]
    assert slips.status == "ok" and slips.error is None
    [(warning, count)] = slips.warnings.items()
    assert warning.startswith("recovered from malformed feed XML: ") and "undefined entity" in warning
    assert count == 1
    # a truncated document and an entity-amplification attack are not slips
    assert reports["broken_xml"].status == "failed" and "no element found" in reports["broken_xml"].error
    assert reports["laughs_xml"].status == "failed" and "amplification" in reports["laughs_xml"].error
    # nor a slip in a document that declares entities: the fallback parser would leave "&co;" unexpanded
    declared = reports["declared-entity_xml"]
    assert declared.status == "failed" and "undefined entity" in declared.error


def test_titles_are_read_as_html_once(tmp_path, server):
    day, _ = fetch(tmp_path, server, "html-titles.xml")
    assert [h.text for h in day.headlines] == [
        "Gold < $2,000 as dollar index > 105",
        "Apple <AAPL.O> rises 2% after results",
        "&lt;script&gt; Stocks rise",
        "Stocks rally on earnings",
    ]


def test_impossible_and_far_future_dates_leave_the_item_undated_and_counted(tmp_path, server):
    day, reports = fetch(tmp_path, server, "dates.xml")
    assert [(h.text, h.published) for h in day.headlines] == [
        ("Stocks rise 1%", "2025-07-30T10:00:00Z"),
        ("Stocks rise 2%", None),
        ("Stocks rise 3%", None),
        ("Stocks rise 4%", "2025-07-30T04:00:00Z"),
    ]
    assert reports["dates_xml"].error is None
    assert reports["dates_xml"].warnings == {
        "dated after 2025-07-31, kept undated": 1,
        "impossible date, kept undated": 1,
    }


def test_every_feed_format_and_encoding_of_the_corpus(tmp_path, server):
    names = ["rss091.xml", "rss1.xml", "rss2.xml", "atom03.xml", "atom.xml", "latin1.xml", "utf16.xml", "cp1251.xml"]
    day, reports = fetch(tmp_path, server, *names)
    assert all(r.status == "ok" for r in reports.values()), reports
    # latin1.xml declares UTF-8 but is Latin-1: read right, and said
    assert all(r.error is None for r in reports.values())
    assert {n: r.warnings for n, r in reports.items() if r.warnings} == {
        "latin1_xml": {"1 byte not UTF-8, read as cp1252": 1}
    }
    texts = {h.text: h for h in day.headlines}
    assert {
        "Peso gains 1% as central bank holds rates",
        "Nikkei rises 1.2% on weaker yen",
        "Café chain shares fall 4% on weak sales",
        "Рубль укрепился на 2% к доллару",
        "日経平均が1%上昇",
        "Нефть дорожает на 3%",
        "Yen & Swiss franc gain as haven demand rises",
    } <= set(texts)
    assert texts["Nikkei rises 1.2% on weaker yen"].published == "2025-07-30T00:00:00Z"
    assert texts["Peso gains 1% as central bank holds rates"].published is None
