"""Bad input is refused with one line before anything is recorded; reading never creates;
`status`, `verify` and `lineage` speak JSON and exit codes a monitor can use (issue 13, items 8-10, 13;
issue 14, item 15). Through click, against the real test server or a real embedded one."""

from __future__ import annotations

import json
import os

import msgspec
import pytest
from click.testing import CliRunner

from events.consumer import Consumer
from events.errors import PermanentError
from events.ids import MAX_SEED, shift_date, today_utc
from events.store import EventStore, stream_key
from varro.cli import main
from workers.dispatcher import GROUP

pytestmark = pytest.mark.timeout(180)

DAY = "2025-08-05"  # a bundled sample day
CHAIN = ("DailyRunRequested", "HeadlinesFetched", "HeadlinesFetched:outcome", "RolloutsGenerated", "Ranked")


@pytest.fixture
def cli(redis_server, monkeypatch, tmp_path):
    """`cli(*args)` -> click result, on the test server; `cli.data` is this test's data directory."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("VARRO_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    def invoke(*args: str, server: bool = True, env: dict | None = None):
        extra = ["--redis-url", redis_server.url] if server else []
        return runner.invoke(main, [*map(str, args), *extra], env=env)

    return invoke


def one_clean_error(result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


def fill(event_store, sample_events, ns: str, names=(*CHAIN, "EpochTrained"), date: str = "2025-01-02"):
    store, events = event_store(ns), sample_events(ns, date)
    for name in names:
        store.append(events[name])
    return store, events


# ------------------------------------------------------------------ item 8 / issue 14 item 15: daily and run


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("bogus", "unknown headline source 'bogus'"),
        ("files:/nowhere/headlines.jsonl", "headline file not found: /nowhere/headlines.jsonl"),
        ("files:", "names no file"),
        ("rss", "live RSS feeds carry today's news"),
        ("sample:extra", "takes no paths"),
    ],
)
def test_daily_refuses_a_source_that_cannot_work_before_recording(cli, redis_client, source, needle):
    result = cli("daily", "--ns", "in8", "--date", DAY, "--source", source)
    one_clean_error(result, 2, needle)
    assert not redis_client.exists(stream_key("in8"))
    # the day is still free: a good request is the first, not "already requested ... source bogus"
    good = cli("daily", "--ns", "in8", "--date", DAY, "--source", "sample")
    assert good.exit_code == 0, good.output
    assert f"{DAY} requested in in8" in good.output and "source sample" in good.output


def test_daily_refuses_a_sample_day_the_sample_lacks(cli, redis_client):
    result = cli("daily", "--ns", "in8", "--date", "2024-01-01", "--source", "sample")
    one_clean_error(result, 2, "no bundled sample headlines for 2024-01-01")
    assert not redis_client.exists(stream_key("in8"))


def test_daily_records_a_file_source_with_its_absolute_path(cli, redis_client, tmp_path, monkeypatch):
    (tmp_path / "h.jsonl").write_text('{"title": "Fed holds rates", "published": "2025-08-05"}\n')
    monkeypatch.chdir(tmp_path)
    result = cli("daily", "--ns", "in8", "--date", DAY, "--source", "files:h.jsonl")
    assert result.exit_code == 0, result.output
    (event,) = [s.event for s in EventStore(redis_client, "in8").read()]
    assert event.source.kind == "files"
    assert event.source.paths == [str(tmp_path / "h.jsonl")]  # a worker in another directory finds it


def test_run_refuses_a_past_rss_range_before_recording(cli, redis_client):
    result = cli("run", "--ns", "in8", "--source", "rss", "--from", shift_date(today_utc(), -2))
    one_clean_error(result, 2, "live RSS feeds carry today's news", shift_date(today_utc(), -2))
    assert not redis_client.exists(stream_key("in8"))


def test_run_refuses_an_unreadable_headline_file_before_recording(cli, redis_client, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("headline,source\nOil rises,x\n")
    result = cli("run", "--ns", "in9", "--source", "files", "--file", bad)
    one_clean_error(result, 2, "CSV is missing column(s) link")
    assert not redis_client.exists(stream_key("in9"))


@pytest.mark.parametrize("kind", ["missing", "not a model"])
def test_a_base_model_path_that_is_not_a_model_is_one_line_without_a_hub_lookup(cli, redis_client, tmp_path, kind):
    base = tmp_path / "models" / "mine"
    if kind == "not a model":
        base.mkdir(parents=True)
        (base / "config.json").write_text("{}")
    env = {"VARRO_MODEL__BASE": str(base), "HF_HUB_OFFLINE": "1"}
    needle = "no such directory" if kind == "missing" else "is not a model directory (missing tokenizer.json"
    for command in (("daily", "--date", DAY, "--source", "sample"), ("run", "--from", DAY, "--to", DAY)):
        result = cli(*command, "--ns", "in8", env=env)
        one_clean_error(result, 2, f"model.base '{base}'", needle)
        assert "huggingface" not in result.output.lower()
    assert not redis_client.exists(stream_key("in8"))


def test_model_cache_never_asks_the_hub_for_a_local_path(tmp_path, monkeypatch):
    import mlx_lm.utils

    from varro.config import VarroConfig
    from varro.model.cache import ModelCache, ModelError

    monkeypatch.setattr(mlx_lm.utils, "_download", lambda *a, **k: pytest.fail("asked the hub for a local path"))
    for base in (str(tmp_path / "nowhere"), "./nowhere/model", "~/nowhere-varro-model", "a/b/c"):
        cfg = msgspec.structs.replace(VarroConfig(), model=msgspec.structs.replace(VarroConfig().model, base=base))
        with pytest.raises(ModelError, match="no such directory") as caught:
            ModelCache(cfg).base_path()
        assert isinstance(caught.value, PermanentError)  # a worker fails it at once, not after retries


# ------------------------------------------------------------------ item 9: usage errors, not tracebacks


FAR = "9999-12-31"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("run", "--from", "2025-08-06", "--to", DAY), ("--from 2025-08-06 is after --to 2025-08-05",)),
        (("backfill", "--from", "2025-08-06", "--to", DAY), ("--from 2025-08-06 is after --to 2025-08-05",)),
        (
            ("replay", "--from", "2025-08-06", "--to", DAY, "--into", "fresh"),
            ("--from 2025-08-06 is after --to 2025-08-05",),
        ),
        (("daily", "--date", DAY, "--seed", "99999999999999999999999"), ("'--seed'", f"0<=x<={MAX_SEED}")),
        (("daily", "--date", DAY, "--seed", str(MAX_SEED + 1)), ("'--seed'",)),
        (("daily", "--date", DAY, "--seed", "-1"), ("'--seed'",)),
        (("run", "--seed", "99999999999999999999999"), ("'--seed'",)),
        (("backfill", "--from", DAY, "--to", DAY, "--into", "bad ns"), ("invalid namespace 'bad ns'",)),
        (("replay", "--into", "bad ns"), ("invalid namespace 'bad ns'",)),
        (("verify", "--against", "bad ns"), ("invalid namespace 'bad ns'",)),
        (("daily", "--date", FAR, "--source", "sample"), ("date 9999-12-31 is too far ahead", "366 days")),
        (("run", "--from", DAY, "--to", FAR), ("too far ahead",)),
        (("backfill", "--from", DAY, "--to", FAR), ("too far ahead",)),
        (("daily", "--date", "0001-01-01", "--source", "sample"), ("too early",)),
    ],
)
def test_bad_ranges_seeds_namespaces_and_dates_are_usage_errors(cli, redis_client, args, needles):
    result = cli(*args, "--ns", "in9")
    one_clean_error(result, 2, *needles)
    assert not redis_client.exists(stream_key("in9"))


def test_the_largest_seed_is_recorded_exactly(cli, redis_client):
    result = cli("daily", "--ns", "in9", "--date", DAY, "--source", "sample", "--seed", str(MAX_SEED))
    assert result.exit_code == 0, result.output
    (event,) = [s.event for s in EventStore(redis_client, "in9").read()]
    assert event.seed == MAX_SEED
    zero = cli("daily", "--ns", "in9b", "--date", DAY, "--source", "sample", "--seed", "0")
    assert zero.exit_code == 0, zero.output


def test_a_date_within_a_year_ahead_is_accepted():
    from events.ids import MAX_DAYS_AHEAD, bounded_date

    today = "2026-03-01"
    assert bounded_date(shift_date(today, MAX_DAYS_AHEAD), today=today) == shift_date(today, MAX_DAYS_AHEAD)
    with pytest.raises(ValueError, match="too far ahead"):
        bounded_date(shift_date(today, MAX_DAYS_AHEAD + 1), today=today)


def test_status_survives_a_recorded_last_day_of_the_calendar(cli, event_store, sample_events):
    """A generated 9999-12-31 recorded before the bound (an old import) reads without OverflowError."""
    events, store = sample_events("far", "9999-12-30"), event_store("far")
    for name in ("DailyRunRequested", "HeadlinesFetched", "RolloutsGenerated"):
        event = events[name]
        store.append(msgspec.structs.replace(event, date=FAR, event_id=event.event_id[::-1]))
    result = cli("status", "--ns", "far")
    assert result.exit_code == 0, result.output
    assert FAR in result.output


def _read_only_dir(tmp_path):
    """A directory this process cannot write: a read-only tmpfs when root (root ignores mode bits),
    else a mode-0500 directory. Returns (path, cleanup, expected errno name)."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() == 0:
        if os.system(f"mount -t tmpfs -o ro,size=64k tmpfs {path} 2>/dev/null") != 0:
            pytest.skip("root without mount permission: cannot make a read-only directory")
        return path, lambda: os.system(f"umount {path}"), "EROFS"
    path.chmod(0o500)
    return path, lambda: path.chmod(0o700), "EACCES"


def test_an_unwritable_data_directory_is_one_line_naming_it(cli, tmp_path):
    not_a_dir = tmp_path / "afile"
    not_a_dir.write_text("x")
    result = cli("daily", "--date", DAY, "--source", "sample", "--data-dir", not_a_dir / "data", server=False)
    one_clean_error(result, 1, f"data directory {not_a_dir / 'data'} is not usable", "ENOTDIR")
    ro, cleanup, cause = _read_only_dir(tmp_path)
    try:
        for command in (("daily", "--date", DAY, "--source", "sample"), ("run", "--from", DAY, "--to", DAY)):
            result = cli(*command, "--data-dir", ro / "data", server=False)
            one_clean_error(result, 1, f"cannot write {ro / 'data'}", cause)
            assert len(result.output.strip().splitlines()) == 1, result.output
    finally:
        cleanup()


# ------------------------------------------------------------------ item 10: reading never creates


@pytest.mark.parametrize(
    "args",
    [("status",), ("namespaces",), ("lineage", "abc"), ("verify", "--against", "x"), ("events", "verify")],
)
def test_reading_a_mistyped_data_directory_creates_nothing(cli, tmp_path, args):
    typo = tmp_path / "typo" / "data"
    result = cli(*args, "--data-dir", typo, server=False)
    one_clean_error(result, 1, f"no data directory {typo}")
    assert not (tmp_path / "typo").exists()


def test_reading_a_data_directory_without_a_server_starts_none(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("status", "--data-dir", empty, server=False)
    one_clean_error(result, 1, "holds no event log")
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [("events", "verify"), ("events", "tail"), ("events", "export"), ("status",), ("lineage", "ab"), ("rebuild",)],
)
def test_an_unknown_namespace_is_an_error(cli, event_store, sample_events, args):
    fill(event_store, sample_events, "known")
    result = cli(*args, "--ns", "nosuch")
    one_clean_error(result, 1, "namespace 'nosuch' does not exist", "known: known")


def test_namespaces_lists_each_with_its_events_and_dates(cli, event_store, sample_events):
    assert json.loads(cli("namespaces", "--json").output) == []
    fill(event_store, sample_events, "alpha")
    fill(event_store, sample_events, "beta", CHAIN[:2], date="2025-03-04")
    result = cli("namespaces", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"ns": "alpha", "events": 6, "first_date": "2025-01-02", "last_date": "2025-01-03"},
        {"ns": "beta", "events": 2, "first_date": "2025-03-04", "last_date": "2025-03-04"},
    ]
    table = cli("namespaces")
    assert "alpha" in table.output and "2025-03-04" in table.output


# ------------------------------------------------------------------ item 13: JSON and exit codes


def test_status_json_and_exit_3_on_a_dead_letter(cli, redis_client, event_store, sample_events):
    fill(event_store, sample_events, "mon")
    result = cli("status", "--ns", "mon", "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["ns"] == "mon" and status["attention"] == [] and status["exit_code"] == 0
    assert status["days"][0]["date"] == "2025-01-02"
    assert status["days"][0]["stages"]["train"] == "done"

    redis_client.xadd(stream_key("mon"), {"e": b"junk", "type": b"EpochTrained"})
    consumer = Consumer(redis_client, "mon", GROUP, "test")
    consumer.ensure_group()
    consumer.read(block_ms=None)
    result = cli("status", "--ns", "mon", "--json")
    assert result.exit_code == 3, result.output
    status = json.loads(result.output)
    assert status["attention"] == ["1 dead letter(s)"] and status["exit_code"] == 3
    assert len(status["dead_letters"]) == 1 and "undecodable" in status["dead_letters"][0]["reason"]
    table = cli("status", "--ns", "mon")
    assert table.exit_code == 3 and "needs attention (exit 3): 1 dead letter(s)" in table.output


def test_status_help_documents_the_exit_codes(cli):
    result = cli("status", "--help", server=False)
    assert "3  a day failed or stalled, or the namespace has dead letters" in result.output


def test_verify_says_not_run_for_one_sided_stages_and_exits_by_what_was_compared(cli, event_store, sample_events):
    _, events = fill(event_store, sample_events, "full")
    fill(event_store, sample_events, "same")
    fill(event_store, sample_events, "half", CHAIN[:3])

    same = cli("verify", "--ns", "full", "--against", "same", "--json")
    assert same.exit_code == 0, same.output
    assert json.loads(same.output)["identical"] is True

    half = cli("verify", "--ns", "full", "--against", "half")
    assert half.exit_code == 3, half.output
    assert "not run" in half.output and "DIFF" not in half.output
    assert "ran on one side only, first 2025-01-02 generate" in half.output
    report = json.loads(cli("verify", "--ns", "full", "--against", "half", "--json").output)
    verdicts = {(s["date"], s["stage"]): s["verdict"] for s in report["stages"]}
    assert verdicts[("2025-01-02", "fetch")] == "same"
    assert verdicts[("2025-01-02", "train")] == "not run"
    assert report["one_sided"] == 3 and report["first_difference"] is None and report["exit_code"] == 3

    other = event_store("other")
    for name in (*CHAIN, "EpochTrained"):
        event = events[name]
        if name == "HeadlinesFetched":
            event = msgspec.structs.replace(event, headlines=event.headlines[:1])
        other.append(msgspec.structs.replace(event, ns="other"))
    diff = cli("verify", "--ns", "full", "--against", "other", "--json")
    assert diff.exit_code == 1, diff.output
    assert json.loads(diff.output)["first_difference"] == {"date": "2025-01-02", "stage": "fetch"}


def test_lineage_json_is_the_chain_newest_first(cli, event_store, sample_events):
    _, events = fill(event_store, sample_events, "lin")
    result = cli("lineage", "c1c1", "--ns", "lin", "--json")
    assert result.exit_code == 0, result.output
    (step,) = json.loads(result.output)
    assert step["checkpoint_sha256"] == "c1" * 32 and step["parent_sha256"] == "c0" * 32
    assert step["epoch_event_id"] == events["EpochTrained"].event_id


def test_the_scheduler_refuses_a_bogus_daily_source_at_start(cli):
    result = cli("scheduler", "--ns", "in8", env={"VARRO_WORKERS__DAILY_SOURCE": "bogus"})
    one_clean_error(result, 2, "unknown headline source 'bogus'")


def test_a_cron_firing_whose_file_is_gone_fails_permanently_and_records_nothing(redis_client, tmp_path):
    from varro.config import VarroConfig
    from varro.errors import UsageProblem
    from workers import tasks
    from workers.runtime import Runtime, set_runtime

    cfg = VarroConfig(data_dir=str(tmp_path), ns="cron")
    set_runtime(Runtime.create(cfg, redis=redis_client))
    try:
        with pytest.raises(UsageProblem, match="headline file not found"):
            tasks.request_daily("cron", source=f"files:{tmp_path / 'gone.jsonl'}")
    finally:
        set_runtime(None)
    assert not redis_client.exists(stream_key("cron"))


def test_rebuild_of_a_log_whose_checkpoints_are_not_here_writes_the_files_and_says_so(
    cli, event_store, sample_events, tmp_path
):
    """A log restored (or synthesised) without its checkpoint files: the projection files are still
    rebuilt, and the missing checkpoint is one line naming it, not a traceback."""
    fill(event_store, sample_events, "nockpt")
    missing = sample_events("nockpt", "2025-01-02")["EpochTrained"].checkpoint.sha256
    one_clean_error(cli("rebuild", "--ns", "nockpt"), 1, "not its checkpoint links", missing)
    assert (tmp_path / "data" / "timestamped_storage_nockpt" / "index.json").is_file()
