"""The fetch job and `varro headlines`: one event per day, payloads kept, no network for recorded days."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from feed_fixtures import server_module

from events.ids import derive_event_id
from jobs.context import JobContext
from jobs.fetch import fetch_headlines
from varro.artifacts import ArtifactStore
from varro.cli.headlines_cmd import headlines
from varro.config import HeadlinesConfig, VarroConfig
from varro.headlines.collect import SAMPLE_DIR, NoHeadlinesError, PastDateError

FIXTURES = Path(__file__).parent / "fixtures" / "feeds"
DAY = "2025-08-04"


@pytest.fixture
def make_ctx(event_store, tmp_path):
    def make(headlines_cfg: HeadlinesConfig = HeadlinesConfig()) -> JobContext:
        cfg = VarroConfig(ns="test", data_dir=str(tmp_path / "data"), headlines=headlines_cfg)
        return JobContext(cfg=cfg, store=event_store("test"), artifacts=ArtifactStore(cfg.data_path), models=None)

    return make


@pytest.fixture
def server():
    srv = server_module().FeedServer().start()
    yield srv
    srv.stop()


def test_a_sample_day_is_recorded_once_with_its_raw_payload(make_ctx):
    ctx = make_ctx()
    first = fetch_headlines(ctx, DAY, source="sample")
    event = first.event
    assert first.created and event.event_id == derive_event_id("test", "HeadlinesFetched", DAY, ["sample"])
    assert event.source_kind == "sample" and not event.forced and event.filter_mode == "strict" and event.cap == 64
    assert 32 <= len(event.headlines) <= 40
    [report] = event.sources
    assert report.payload.kind == "feed-payload"
    assert ctx.artifacts.get(report.payload) == (SAMPLE_DIR / f"{DAY}.jsonl").read_bytes()
    again = fetch_headlines(ctx, DAY, source="sample")
    assert not again.created and again.event == ctx.store.get(event.event_id)
    assert again.entry_id == first.entry_id and ctx.store.count() == 1


def test_a_forced_refetch_is_a_new_event_that_says_so(make_ctx):
    ctx = make_ctx()
    first = fetch_headlines(ctx, DAY, source="sample").event
    forced = fetch_headlines(ctx, DAY, source="sample", force=True)
    assert forced.created and forced.event.forced and forced.event.event_id != first.event_id
    assert forced.event.headlines == first.headlines
    assert ctx.store.latest("HeadlinesFetched", DAY).event_id == forced.event.event_id
    assert fetch_headlines(ctx, DAY, source="sample", force=True).event.event_id not in (
        first.event_id,
        forced.event.event_id,
    )
    assert len(ctx.store.all_for("HeadlinesFetched", DAY)) == 3


def test_rss_for_a_past_day_is_refused_and_records_nothing(make_ctx):
    ctx = make_ctx()
    with pytest.raises(PastDateError, match="use a file source"):
        fetch_headlines(ctx, "2025-08-03", source="rss", today=DAY)
    assert ctx.store.count() == 0


def test_a_recorded_rss_day_is_returned_without_touching_the_network(make_ctx, server, tmp_path):
    feeds = tmp_path / "feeds.toml"
    feeds.write_text(f'[markets]\nwire = "{server.url("/feeds/rss1.xml")}"\nbad = "{server.url("/feeds/page.html")}"\n')
    ctx = make_ctx(HeadlinesConfig(feeds_file=str(feeds), timeout_s=1.0, retries=0))
    first = fetch_headlines(ctx, "2025-07-30", source="rss", today="2025-07-30")
    assert [h.text for h in first.event.headlines] == [
        "Bitcoin rises 2% to $118,000 as ETF inflows resume",
        "Copper falls 1.5% on weak China factory data",
    ]
    wire, bad = first.event.sources
    assert ctx.artifacts.get(wire.payload) == (FIXTURES / "rss1.xml").read_bytes()
    assert bad.status == "failed" and bad.payload is not None, "the bad payload is kept for the audit"
    requests = len(server.requests)
    replay = fetch_headlines(ctx, "2025-07-30", source="rss", today="2025-07-30")
    assert not replay.created and replay.event == first.event
    assert len(server.requests) == requests
    # and on a later day the recorded day is still served from the log, never refused or re-fetched
    assert fetch_headlines(ctx, "2025-07-30", source="rss", today="2025-08-02").event == first.event
    assert len(server.requests) == requests


def test_the_recorded_reports_carry_warnings_and_the_final_url_apart_from_errors(make_ctx, server, tmp_path):
    feeds = tmp_path / "feeds.toml"
    feeds.write_text(
        f'[markets]\nmoved = "{server.url("/redirect/1")}"\nslips = "{server.url("/feeds/slips.xml")}"\n'
        f'gone = "{server.url("/missing")}"\n'
    )
    ctx = make_ctx(HeadlinesConfig(feeds_file=str(feeds), timeout_s=2.0, retries=0))
    fetched = fetch_headlines(ctx, "2025-07-30", source="rss", today="2025-07-30")
    # the reports are no input of the event's id: a day keeps its id whatever its reports hold
    assert fetched.event.event_id == derive_event_id("test", "HeadlinesFetched", "2025-07-30", ["rss"])
    moved, slips, gone = ctx.store.latest_of(type(fetched.event), "2025-07-30").sources  # as decoded from the log
    assert (moved.status, moved.error, moved.warnings) == ("ok", None, {})
    assert moved.final_url == server.url("/feeds/rss1.xml")
    assert (slips.status, slips.error, slips.final_url) == ("ok", None, None)
    assert list(slips.warnings) == [next(iter(slips.warnings))] and "undefined entity" in next(iter(slips.warnings))
    assert (gone.status, gone.error, gone.warnings) == ("failed", "HTTP 404 Not Found", {})


def test_a_day_without_a_single_headline_records_nothing(make_ctx, tmp_path):
    ctx = make_ctx()
    broken = tmp_path / "broken.csv"
    broken.write_text("headline\nOil rises 2%\n")
    with pytest.raises(NoHeadlinesError, match=r"broken.csv: CSV is missing column\(s\) link") as caught:
        fetch_headlines(ctx, DAY, source="files", paths=[broken])
    assert caught.value.reports[0].status == "failed"
    assert ctx.store.count() == 0
    good = tmp_path / "good.csv"
    good.write_text(f"text,link,published\nOil rises 2%,https://o.example.com/1,{DAY}T09:00:00Z\n")
    recorded = fetch_headlines(ctx, DAY, source="files", paths=[broken, good])
    assert [h.text for h in recorded.event.headlines] == ["Oil rises 2%"]
    assert [r.status for r in recorded.event.sources] == ["failed", "ok"]


def _cli(redis_server, tmp_path, *args, env=None):
    base = ["--redis-url", redis_server.url, "--data-dir", str(tmp_path / "data"), "--ns", "cli"]
    sub, *rest = args
    env = {"VARRO_CONFIG": None, "REDIS_URL": None, "COLUMNS": "220", **(env or {})}
    return CliRunner().invoke(headlines, [sub, *base, *rest], env=env, catch_exceptions=False)


def test_cli_rss_fetch_reports_each_feed_as_it_finishes(redis_server, server, tmp_path):
    """Today's RSS through the CLI: one progress line per feed with its outcome, then the summary table."""
    feeds = tmp_path / "feeds.toml"
    feeds.write_text(
        f'[markets]\nwire = "{server.url("/today")}"\nbad = "{server.url("/feeds/page.html")}"\n'
        f'gone = "{server.url("/missing")}"\n'
    )
    env = {
        "VARRO_HEADLINES__FEEDS_FILE": str(feeds),
        "VARRO_HEADLINES__TIMEOUT_S": "2",
        "VARRO_HEADLINES__RETRIES": "0",
    }
    result = _cli(redis_server, tmp_path, "fetch", env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("wire: ok — 2 items" in line for line in lines), result.output
    assert any("bad: failed — served an HTML page, not a feed" in line for line in lines), result.output
    assert any("gone: failed — HTTP 404 Not Found" in line for line in lines), result.output
    assert "2 headlines recorded" in result.output
    assert sorted(path for path, _ in server.requests) == ["/feeds/page.html", "/missing", "/today"]


def test_cli_fetch_show_and_import(redis_server, redis_client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fetched = _cli(redis_server, tmp_path, "fetch", "--source", "sample", "--date", DAY)
    assert fetched.exit_code == 0, fetched.output
    assert "headlines recorded" in fetched.output and "dropped by filter" in fetched.output
    assert f"sample/{DAY}.jsonl" in fetched.output
    again = _cli(redis_server, tmp_path, "fetch", "--source", "sample", "--date", DAY)
    assert again.exit_code == 0 and "already recorded" in again.output
    shown = _cli(redis_server, tmp_path, "show", "--date", DAY, "--jsonl")
    lines = [json.loads(line) for line in shown.output.splitlines()]
    assert 32 <= len(lines) <= 40 and {"id", "text", "source", "url", "published", "category"} <= set(lines[0])
    past = _cli(redis_server, tmp_path, "fetch", "--source", "rss", "--date", "2020-01-01")
    assert past.exit_code == 2 and "cannot be fetched for 2020-01-01" in past.output
    history = tmp_path / "history.jsonl"
    history.write_text(
        "".join(
            json.dumps(
                {
                    "text": f"Gold rises {n}%",
                    "link": f"https://g.example.com/{n}",
                    "published": f"2024-03-0{n}T10:00:00Z",
                }
            )
            + "\n"
            for n in (1, 2)
        )
    )
    imported = _cli(redis_server, tmp_path, "import", str(history))
    assert imported.exit_code == 0, imported.output
    assert (
        "2024-03-01: 1 headlines recorded" in imported.output and "2024-03-02: 1 headlines recorded" in imported.output
    )
    missing = _cli(redis_server, tmp_path, "show", "--date", "2024-03-05")
    assert missing.exit_code == 1 and "no headlines recorded for 2024-03-05" in missing.output


def test_cli_import_refuses_an_oversized_file_in_one_line_and_survives_bad_records(
    redis_server, redis_client, tmp_path
):
    huge = tmp_path / "huge.jsonl"
    record = {"text": "Gold rises 1%", "link": "https://g.example.com/1", "published": f"{DAY}T10:00:00Z"}
    huge.write_text("".join(json.dumps(dict(record, link=f"https://g.example.com/{n}")) + "\n" for n in range(200)))
    env = {"VARRO_HEADLINES__MAX_FILE_BYTES": "5000"}
    refused = _cli(redis_server, tmp_path, "import", str(huge), env=env)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "over headlines.max_file_bytes=5,000" in refused.output
    assert redis_client.keys("*cli*") == []
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps(record) + "\n" + json.dumps(dict(record, published="0001-01-01T00:00:00+05:00")) + "\n")
    fetched = _cli(redis_server, tmp_path, "fetch", "--file", str(mixed), "--date", DAY)
    assert fetched.exit_code == 0, fetched.output
    assert "1 headlines recorded" in fetched.output and "unreadable date (line 2)" in fetched.output
    assert redis_client.keys("*cli*") != [], "the store's keys carry the namespace"
    # a .json document: a record nested too deeply costs itself, not the file, nor a traceback
    deep = tmp_path / "deep.json"
    later = dict(record, published="2025-08-05T10:00:00Z")
    deep.write_text(f"[{json.dumps(later)},\n{'[' * 100_000}{']' * 100_000}]")
    kept = _cli(redis_server, tmp_path, "fetch", "--file", str(deep), "--date", "2025-08-05")
    assert kept.exit_code == 0 and "Traceback" not in kept.output, kept.output
    assert "1 headlines recorded" in kept.output and "JSON nested too deeply (record 2 at line 2)" in kept.output


def test_cli_show_prints_control_characters_and_markup_as_text(redis_server, event_store, tmp_path):
    """An event recorded before ingestion stripped controls must still not drive the terminal."""
    from events.schema import Headline, HeadlinesFetched

    store = event_store("cli")
    text = "Oil \x1b[2J rises [bold red]2%[/] \u202eon supply"
    store.append(
        HeadlinesFetched(
            event_id="e-old",
            ns="cli",
            date=DAY,
            correlation_id="e-old",
            headlines=[Headline(id="h1", text=text, source="x\x07.example.com", url="https://x.example.com/a")],
            sources=[],
            source_kind="files",
        )
    )
    shown = _cli(redis_server, tmp_path, "show", "--date", DAY)
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.output and "\u202e" not in shown.output and "\x07" not in shown.output
    assert "\\x1b[2J" in shown.output and "[bold red]2%[/]" in shown.output and "\\u202e" in shown.output


def test_cli_fetch_ends_by_its_deadline_whatever_a_slowloris_server_does(redis_server, server, tmp_path):
    """The issue's reproduction: a header byte every 0.3 s used to hold `varro headlines fetch` indefinitely."""
    import time

    feeds = tmp_path / "feeds.toml"
    feeds.write_text(f'[markets]\nwire = "{server.url("/today")}"\nloris = "{server.url("/slowloris")}"\n')
    env = {
        "VARRO_HEADLINES__FEEDS_FILE": str(feeds),
        "VARRO_HEADLINES__TIMEOUT_S": "1.5",
        "VARRO_HEADLINES__RETRIES": "1",
        "VARRO_HEADLINES__DEADLINE_S": "20",
    }
    start = time.monotonic()
    result = _cli(redis_server, tmp_path, "fetch", env=env)
    elapsed = time.monotonic() - start
    assert result.exit_code == 0, result.output
    assert "loris: failed — no complete answer within 1.5s (gave up after 2 attempts)" in result.output
    assert "2 headlines recorded" in result.output
    assert elapsed < 40, f"the drip lasts 60 s; the fetch took {elapsed:.1f} s"
