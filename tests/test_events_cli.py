"""`varro events|server|doctor` through click, against the real test server."""

from __future__ import annotations

import json

import msgspec
import pytest
from click.testing import CliRunner

from events.store import stream_key
from varro.cli import main

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cli(redis_server, monkeypatch, tmp_path):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("VARRO_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    def invoke(*args: str, **kwargs):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke


@pytest.fixture
def filled(event_store, sample_events):
    store = event_store("prod")
    events = sample_events("prod")
    for name in (
        "DailyRunRequested",
        "HeadlinesFetched",
        "HeadlinesFetched:outcome",
        "RolloutsGenerated",
        "Ranked",
        "EpochTrained",
    ):
        store.append(events[name])
    return store, events


def test_every_subcommand_has_help(cli):
    for args in (
        ["events"],
        ["events", "tail"],
        ["events", "show"],
        ["events", "verify"],
        ["events", "export"],
        ["events", "import"],
        ["events", "quarantine"],
        ["server"],
        ["server", "start"],
        ["server", "stop"],
        ["server", "status"],
        ["doctor"],
    ):
        result = cli(*args, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, args


def test_tail_lists_latest_events_with_filters(cli, redis_server, filled):
    result = cli("events", "tail", "--ns", "prod", "--redis-url", redis_server.url)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 0 and len(lines) == 6
    assert "DailyRunRequested" in lines[0] and "EpochTrained" in lines[-1]
    result = cli(
        "events", "tail", "--ns", "prod", "--redis-url", redis_server.url, "--type", "HeadlinesFetched", "-n", "1"
    )
    (only,) = result.output.strip().splitlines()
    assert "2025-01-03" in only and "headlines=1" in only


def test_show_prints_the_event_as_json(cli, redis_server, filled):
    _, events = filled
    ranked = events["Ranked"]
    result = cli("events", "show", ranked.event_id, "--ns", "prod", "--redis-url", redis_server.url)
    assert result.exit_code == 0
    shown = json.loads(result.output)
    assert shown["type"] == "Ranked" and shown["outcome_date"] == "2025-01-03"
    by_date = cli(
        "events", "show", "--type", "Ranked", "--date", "2025-01-02", "--ns", "prod", "--redis-url", redis_server.url
    )
    assert json.loads(by_date.output)["event_id"] == ranked.event_id
    missing = cli("events", "show", "nope", "--ns", "prod", "--redis-url", redis_server.url)
    assert missing.exit_code == 1 and "no event nope" in missing.output


def test_verify_exits_1_and_names_the_broken_entry(cli, redis_server, redis_client, filled):
    ok = cli("events", "verify", "--ns", "prod", "--redis-url", redis_server.url)
    assert ok.exit_code == 0 and "6 entries, chain intact" in ok.output
    rows = redis_client.xrange(stream_key("prod"))
    redis_client.delete(stream_key("prod"))
    for i, (entry_id, fields) in enumerate(rows):
        if i == 1:
            fields = {**fields, b"e": fields[b"e"].replace(b"Fed holds", b"Fed hikes")}
        redis_client.xadd(stream_key("prod"), fields, id=entry_id)
    broken = cli("events", "verify", "--ns", "prod", "--redis-url", redis_server.url)
    assert broken.exit_code == 1
    assert f"BROKEN: namespace 'prod' at entry {rows[1][0].decode()}" in broken.output


def test_export_then_restore_under_the_same_name(cli, redis_server, redis_client, filled, tmp_path):
    out = tmp_path / "backup" / "prod.jsonl"
    exported = cli("events", "export", "--ns", "prod", "--redis-url", redis_server.url, "-o", out)
    assert exported.exit_code == 0
    assert len(out.read_text().splitlines()) == 6
    assert all(msgspec.json.decode(line)["event"]["type"] for line in out.read_text().splitlines())
    elsewhere = cli("events", "import", out, "--ns", "restored", "--redis-url", redis_server.url)
    assert elsewhere.exit_code == 1 and "replay --ns prod --into restored" in elsewhere.output
    assert "Traceback" not in elsewhere.output and not redis_client.keys(b"varro:{restored}:*")
    redis_client.flushdb()  # the server's data is lost; the backup brings the namespace back
    imported = cli("events", "import", out, "--ns", "prod", "--redis-url", redis_server.url)
    assert imported.exit_code == 0 and "imported 6 events" in imported.output
    again = cli("events", "import", out, "--ns", "prod", "--redis-url", redis_server.url)
    assert again.exit_code == 1 and "NamespaceNotEmpty" in again.output
    stdout = cli("events", "export", "--ns", "prod", "--redis-url", redis_server.url)
    assert stdout.stdout == out.read_text()


def test_bad_namespace_is_a_clean_error(cli, redis_server):
    result = cli("events", "tail", "--ns", "bad ns!", "--redis-url", redis_server.url)
    assert result.exit_code == 2 and "invalid namespace" in result.output


def test_server_start_status_stop(cli, tmp_path):
    data = tmp_path / "srv"
    started = cli("server", "start", "--data-dir", data)
    assert started.exit_code == 0 and started.output.strip().startswith("unix://")
    try:
        status = cli("server", "status", "--data-dir", data)
        assert status.exit_code == 0 and "appendfsync=always" in status.output
    finally:
        stopped = cli("server", "stop", "--data-dir", data)
    assert stopped.output.strip() == "stopped"
    assert cli("server", "status", "--data-dir", data).exit_code == 1


def test_doctor_reports_the_installation(cli, redis_server, tmp_path):
    result = cli("doctor", "--redis-url", redis_server.url, "--data-dir", tmp_path)
    assert result.exit_code == 0, result.output
    for key in (
        "python",
        "varro",
        "mlx",
        "mlx-lm",
        "rq",
        "redis-py",
        "redis url",
        "redis reachable",
        "data dir",
        "mlx device",
        "blas preload",
        "blas sgemm",
        "model kernels",
    ):
        assert any(line.startswith(key + " ") for line in result.output.splitlines()), key
    assert "external" in result.output and "valkey 9" in result.output
    assert "auto: numpy softmax/SwiGLU for qwen3 models on the CPU" in result.output


def test_doctor_fails_on_unreachable_redis(cli, tmp_path):
    result = cli("doctor", "--redis-url", f"unix://{tmp_path}/nothing.sock", "--data-dir", tmp_path)
    assert result.exit_code == 1 and "NO:" in result.output


def test_import_refuses_an_invalid_target_namespace(cli, redis_server, tmp_path):
    dump = tmp_path / "x.jsonl"
    dump.write_text("")
    result = cli("events", "import", dump, "--ns", "no/slashes", "--redis-url", redis_server.url)
    assert result.exit_code == 2 and "invalid namespace" in result.output


def test_tail_follow_prints_new_events_as_they_arrive_and_stops_cleanly(
    redis_server, event_store, sample_events, tmp_path
):
    """A real `varro events tail --follow` process: the listing, then each new event (filters applied), then Ctrl-C."""
    import os
    import queue
    import signal
    import subprocess
    import sys
    import threading

    store = event_store("live")
    events = sample_events("live", "2025-01-03")
    store.append(events["DailyRunRequested"])
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"VARRO_DATA_DIR": str(tmp_path / "data")}

    readers = []

    def follow(*extra: str) -> tuple[subprocess.Popen, queue.Queue]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "varro.cli",
                "events",
                "tail",
                "--follow",
                "--ns",
                "live",
                "--redis-url",
                redis_server.url,
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        lines: queue.Queue = queue.Queue()
        readers.append(threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True))
        readers[-1].start()
        return proc, lines

    everything, all_lines = follow()
    only_generated, generated_lines = follow("--type", "RolloutsGenerated")
    try:
        assert "DailyRunRequested" in all_lines.get(timeout=30)  # the listing comes first
        store.append(events["HeadlinesFetched"])
        assert "HeadlinesFetched" in all_lines.get(timeout=10)
        store.append(events["RolloutsGenerated"])
        assert "RolloutsGenerated" in all_lines.get(timeout=10)
        # the filtered follower skipped the listing and HeadlinesFetched: its first line is the generation
        assert "RolloutsGenerated" in generated_lines.get(timeout=10)
    finally:
        for proc in (everything, only_generated):
            proc.send_signal(signal.SIGINT)
    codes = everything.wait(timeout=10), only_generated.wait(timeout=10)
    for reader in readers:
        reader.join(timeout=10)
    assert codes == (0, 0), list(all_lines.queue) + list(generated_lines.queue)
    for reader in readers:
        reader.join(timeout=10)
    assert all_lines.empty() and generated_lines.empty()  # nothing else was printed, no traceback on Ctrl-C


def test_a_foreign_stream_entry_is_skipped_and_reported_not_a_traceback(cli, redis_server, redis_client, filled):
    junk = redis_client.xadd(stream_key("prod"), {"e": b"<junk>", "type": b"EpochTrained"}).decode()
    url = ("--ns", "prod", "--redis-url", redis_server.url)
    tail = cli("events", "tail", *url)
    assert tail.exit_code == 0 and len(tail.stdout.splitlines()) == 6
    assert "skipped 1 foreign entry of namespace 'prod'" in tail.stderr and junk in tail.stderr
    exported = cli("events", "export", *url)
    assert exported.exit_code == 0 and len(exported.stdout.splitlines()) == 6 and "left out" in exported.stderr
    verified = cli("events", "verify", *url)
    assert verified.exit_code == 0 and "6 entries, chain intact" in verified.output
    assert f"foreign: 1 entries not written by Varro (outside the chain): {junk}" in verified.output
    status = cli("status", *url)
    assert status.exit_code == 0, status.output
    assert "foreign stream entries skipped (not written by Varro): 1" in status.output
    for result in (tail, exported, verified, status):
        assert "Traceback" not in result.output


def test_quarantine_moves_only_foreign_entries_off_the_stream(cli, redis_server, redis_client, filled):
    junk = redis_client.xadd(stream_key("prod"), {"e": b"<junk>", "type": b"EpochTrained"}).decode()
    url = ("--ns", "prod", "--redis-url", redis_server.url)
    dry = cli("events", "quarantine", "--dry-run", *url)
    assert dry.exit_code == 0 and "would move 1 foreign entries" in dry.output and junk in dry.output
    assert redis_client.xlen(stream_key("prod")) == 7
    moved = cli("events", "quarantine", *url)
    assert moved.exit_code == 0 and "moved 1 foreign entries" in moved.output
    assert redis_client.xlen(stream_key("prod")) == 6
    ((_, kept),) = redis_client.xrange(b"varro:{prod}:quarantine")
    assert kept[b"entry_id"] == junk.encode() and kept[b"f:e"] == b"<junk>"
    verified = cli("events", "verify", *url)
    assert verified.exit_code == 0 and "foreign" not in verified.output and "6 entries, chain intact" in verified.output
    assert "moved 0 foreign entries" in cli("events", "quarantine", *url).output
