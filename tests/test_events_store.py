"""The event store on a real embedded Valkey: idempotence, preconditions, the hash
chain, backup/restore and concurrent writers."""

from __future__ import annotations

import io
import itertools
import multiprocessing
import threading
from collections.abc import Callable

import msgspec
import pytest
import redis as redis_py

from events import codec
from events.errors import ChainConflict, EventError, NamespaceNotEmpty, PreconditionError
from events.ids import derive_event_id
from events.schema import DailyRunRequested, HeadlinesFetched, HeadlineSource, Ranked
from events.store import EventStore, VerifyReport, index_key, stream_key

pytestmark = pytest.mark.timeout(120)

LINEAGE = (
    "DailyRunRequested",
    "HeadlinesFetched",
    "HeadlinesFetched:outcome",
    "RolloutsGenerated",
    "Ranked",
    "EpochTrained",
)


def run_event(ns: str, date: str, n: int) -> DailyRunRequested:
    return DailyRunRequested(
        event_id=derive_event_id(ns, "DailyRunRequested", date, [str(n)]),
        ns=ns,
        date=date,
        correlation_id=f"c{n}",
        trigger="test",
        seed=n,
        source=HeadlineSource(kind="feeds"),
    )


def fill(store: EventStore, sample_events, date: str = "2025-01-02") -> dict:
    events = sample_events(store.ns, date)
    for name in LINEAGE:
        store.append(events[name])
    return events


def rewrite_stream(client, ns: str, change) -> None:
    """Tamper as an attacker with write access would: rebuild the stream with the
    same entry ids, passing each entry's fields through `change(index, fields)`."""
    key = stream_key(ns)
    rows = client.xrange(key)
    client.delete(key)
    for i, (entry_id, fields) in enumerate(rows):
        client.xadd(key, change(i, dict(fields)), id=entry_id)


def test_append_is_idempotent_by_event_id(event_store, sample_events):
    store = event_store()
    event = sample_events("test")["DailyRunRequested"]
    first = store.append(event)
    again = store.append(event)
    assert first.created and not again.created
    assert again.entry_id == first.entry_id
    assert again.event == first.event  # the recorded event (its recorded_at), not the new attempt
    assert store.count() == 1
    assert store.get(event.event_id) == first.event


def test_append_stamps_envelope_and_links_the_chain(event_store, sample_events):
    store = event_store(code_version="9.9.9")
    fill(store, sample_events)
    entries = list(store.read())
    assert entries[0].event.prev_hash == "0" * 64
    for before, after in itertools.pairwise(entries):
        assert after.event.prev_hash == codec.entry_hash(before.raw)
    assert all(e.event.code_version == "9.9.9" and e.event.recorded_at.endswith("+00:00") for e in entries)


def test_missing_predecessor_is_refused_with_its_name(event_store, sample_events):
    store = event_store()
    events = sample_events("test", "2025-01-02")
    store.append(events["HeadlinesFetched"])
    store.append(events["RolloutsGenerated"])
    with pytest.raises(PreconditionError, match=r"needs HeadlinesFetched for 2025-01-03"):
        store.append(events["Ranked"])
    assert store.count() == 2
    assert store.verify().ok


def test_event_of_another_namespace_is_refused(event_store, sample_events):
    with pytest.raises(EventError, match="belongs to namespace 'other'"):
        event_store("test").append(sample_events("other")["DailyRunRequested"])


def test_lookups_by_type_and_date(event_store, sample_events):
    store = event_store()
    events = fill(store, sample_events)
    fill(store, sample_events, "2025-01-05")
    rerun = msgspec.structs.replace(events["HeadlinesFetched"], event_id="forced-1", forced=True)
    store.append(rerun)
    assert [e.event_id for e in store.all_for("HeadlinesFetched", "2025-01-02")] == [
        events["HeadlinesFetched"].event_id,
        "forced-1",
    ]
    assert store.latest("HeadlinesFetched", "2025-01-02").event_id == "forced-1"
    assert store.latest("Ranked", "2025-01-04") is None
    assert store.all_for("Ranked", "2025-01-04") == []
    assert store.dates("HeadlinesFetched") == ["2025-01-02", "2025-01-03", "2025-01-05", "2025-01-06"]
    ranked = list(store.read(types=["Ranked"], dates=["2025-01-05"]))
    assert [s.event.date for s in ranked] == ["2025-01-05"]
    assert store.get("no-such-event") is None
    assert EventStore.namespaces(store.redis) == ["test"]


def test_typed_lookups_return_only_events_of_the_asked_type(event_store, sample_events):
    store = event_store()
    events = fill(store, sample_events)
    fetched = events["HeadlinesFetched"]
    assert store.latest_of(HeadlinesFetched, "2025-01-02") == store.latest("HeadlinesFetched", "2025-01-02")
    assert store.latest_of(HeadlinesFetched, "2025-01-02").event_id == fetched.event_id
    assert store.latest_of(Ranked, "2025-01-04") is None
    assert store.get_of(HeadlinesFetched, fetched.event_id).event_id == fetched.event_id
    # an id naming an event of another type is, to a caller that needs this type, not recorded
    assert store.get_of(Ranked, fetched.event_id) is None
    assert store.get_of(Ranked, "no-such-event") is None
    assert [e.event_id for e in store.all_of(HeadlinesFetched, "2025-01-02")] == [fetched.event_id]
    assert store.all_of(Ranked, "2025-01-04") == []


def test_an_index_naming_an_unrecorded_event_is_an_error_not_a_crash(event_store, redis_client, sample_events):
    store = event_store()
    fill(store, sample_events)
    redis_client.rpush(index_key(store.ns, "HeadlinesFetched", "2025-01-02"), "never-appended")
    with pytest.raises(EventError, match="index of HeadlinesFetched 2025-01-02 names an unrecorded event"):
        store.all_for("HeadlinesFetched", "2025-01-02")


def test_read_pages_through_long_streams(event_store):
    store = event_store()
    store.append_many(run_event("test", "2025-01-01", i) for i in range(2500))
    seeds = [s.event.seed for s in store.read()]
    assert seeds == list(range(2500))
    middle = list(store.read(start=store.entry_id(run_event("test", "2025-01-01", 1000).event_id)))
    assert middle[0].event.seed == 1000 and len(middle) == 1500


def test_append_many_skips_recorded_events_and_keeps_the_chain(event_store):
    store = event_store()
    events = [run_event("test", "2025-01-01", i) for i in range(10)]
    store.append_many(events[:4])
    results = store.append_many(events)
    assert [r.created for r in results] == [False] * 4 + [True] * 6
    assert store.count() == 10
    assert store.verify().ok


def test_follow_yields_new_entries(event_store):
    store = event_store()
    store.append(run_event("test", "2025-01-01", 0))
    seen = []

    def later():
        for i in range(1, 4):
            store.append(run_event("test", "2025-01-01", i))

    writer = threading.Thread(target=later)
    stream = store.follow(block_ms=100, stop=lambda: len(seen) >= 3)
    writer.start()
    seen.extend(s.event.seed for s in stream)
    writer.join()
    assert seen == [1, 2, 3]


def test_verify_accepts_an_intact_chain(event_store, sample_events):
    store = event_store()
    fill(store, sample_events)
    report = store.verify()
    assert report.ok and report.checked == len(LINEAGE)


def test_verify_finds_an_altered_entry(event_store, redis_client, sample_events):
    store = event_store()
    fill(store, sample_events)
    entries = list(store.read())
    evil = codec.encode(msgspec.structs.replace(entries[2].event, correlation_id="forged"))
    rewrite_stream(redis_client, "test", lambda i, f: {**f, b"e": evil} if i == 2 else f)
    report = store.verify()
    assert not report.ok
    assert report.first_broken == entries[2].entry_id
    assert "altered" in report.reason


def test_verify_finds_a_forged_hash_at_the_next_link(event_store, redis_client, sample_events):
    store = event_store()
    fill(store, sample_events)
    entries = list(store.read())
    evil = codec.encode(msgspec.structs.replace(entries[2].event, correlation_id="forged"))
    rewrite_stream(
        redis_client, "test", lambda i, f: {**f, b"e": evil, b"h": codec.entry_hash(evil).encode()} if i == 2 else f
    )
    report = store.verify()
    assert not report.ok
    assert report.first_broken == entries[3].entry_id
    assert "prev_hash" in report.reason


def test_verify_finds_a_forged_last_entry_by_the_tip(event_store, redis_client, sample_events):
    store = event_store()
    fill(store, sample_events)
    entries = list(store.read())
    last = len(entries) - 1
    evil = codec.encode(msgspec.structs.replace(entries[last].event, seed=99))
    rewrite_stream(
        redis_client, "test", lambda i, f: {**f, b"e": evil, b"h": codec.entry_hash(evil).encode()} if i == last else f
    )
    report = store.verify()
    assert not report.ok and "tip" in report.reason


def test_export_import_round_trip(event_store, sample_events, tmp_path, redis_client):
    source = event_store("prod")
    fill(source, sample_events)
    path = tmp_path / "prod.jsonl"
    with path.open("w") as fh:
        assert source.export_jsonl(fh) == len(LINEAGE)
    first = path.read_text()
    assert all(msgspec.json.decode(line)["event"]["ns"] == "prod" for line in first.splitlines())
    events = [s.event for s in source.read()]
    ranked = source.latest("Ranked", "2025-01-02")

    redis_client.flushdb()  # the server is lost; the backup restores the namespace under its own name
    restored = event_store("prod")
    with path.open() as fh:
        assert restored.import_jsonl(fh) == len(LINEAGE)
    assert restored.verify().ok
    again = io.StringIO()
    restored.export_jsonl(again)
    assert again.getvalue() == first
    assert [s.event for s in restored.read()] == events
    assert restored.latest("Ranked", "2025-01-02") == ranked


def test_import_into_another_name_is_refused_before_anything_is_written(event_store, sample_events):
    source = event_store("s2")
    fill(source, sample_events)
    dump = io.StringIO()
    source.export_jsonl(dump)
    target = event_store("imp")
    with pytest.raises(EventError, match=r"namespace 's2', not 'imp'.*replay --ns s2 --into imp"):
        target.import_jsonl(io.StringIO(dump.getvalue()))
    assert target.count() == 0 and not target.redis.keys(b"varro:{imp}:*")


def test_import_refuses_a_non_empty_namespace(event_store, sample_events):
    source = event_store("prod")
    fill(source, sample_events)
    dump = io.StringIO()
    source.export_jsonl(dump)
    dump.seek(0)
    with pytest.raises(NamespaceNotEmpty):
        source.import_jsonl(dump)


def test_import_refuses_an_edited_line(event_store, sample_events):
    source = event_store("prod")
    fill(source, sample_events)
    dump = io.StringIO()
    source.export_jsonl(dump)
    edited = dump.getvalue().replace('"seed":1234', '"seed":4321', 1)
    with pytest.raises(EventError, match=r"line 1 .*do not hash"):
        event_store("copy").import_jsonl(io.StringIO(edited))


def test_concurrent_appends_from_threads_keep_one_valid_chain(event_store):
    store = event_store()

    def writer(w: int) -> None:
        for i in range(40):
            store.append(run_event("test", "2025-01-01", w * 1000 + i))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 120
    assert store.verify().ok


def _process_writer(url: str, worker: int, n: int) -> None:
    store = EventStore(redis_py.Redis.from_url(url), "test")
    for i in range(n):
        store.append(run_event("test", "2025-01-01", worker * 1000 + i))
        # every other writer also re-appends a shared event: exactly one copy may survive
        store.append(run_event("test", "2025-01-01", 999_999))


def test_concurrent_appends_from_processes_keep_one_valid_chain(event_store, redis_server):
    store = event_store()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_process_writer, args=(redis_server.url, w, 60)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert store.count() == 121
    assert store.verify().ok
    assert len(store.all_for("DailyRunRequested", "2025-01-01")) == 121


class RivalFirst(redis_py.Redis):
    """A client on which another writer appends just before each pipeline of appends goes
    out: by the time this client's scripts run, the tip they were linked to has moved."""

    rival: Callable[[], None] | None = None

    def pipeline(self, transaction=True, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def rival_first(*args, **kwargs):
            if self.rival is not None:
                self.rival()
            return execute(*args, **kwargs)

        pipe.execute = rival_first
        return pipe


def racing_store(redis_server, rival: EventStore, rounds: int) -> EventStore:
    """A store on namespace `rival.ns` that loses the race to `rival` on its first `rounds` attempts."""
    numbers = itertools.count(100)
    left = [rounds]

    def append_first() -> None:
        if left[0] > 0:
            left[0] -= 1
            rival.append(run_event(rival.ns, "2025-01-02", next(numbers)))

    client = RivalFirst.from_url(redis_server.url, decode_responses=False)
    client.rival = append_first
    return EventStore(client, rival.ns)


def test_an_append_that_lost_the_race_retries_from_the_tip_the_server_reports(event_store, redis_server):
    rival = event_store()
    mine = run_event("test", "2025-01-03", 1)
    appended = racing_store(redis_server, rival, rounds=2).append(mine)
    assert appended.created
    assert [stored.event.event_id for stored in rival.read()][-1] == mine.event_id  # after both of the rival's
    assert rival.count() == 3
    assert rival.verify().ok


def test_an_append_whose_tip_keeps_moving_gives_up_with_chain_conflict(event_store, redis_server, monkeypatch):
    import events.append

    monkeypatch.setattr(events.append, "MAX_ATTEMPTS", 3)
    rival = event_store()
    mine = run_event("test", "2025-01-03", 1)
    with pytest.raises(ChainConflict, match="chain tip kept moving for 3 attempts"):
        racing_store(redis_server, rival, rounds=10).append(mine)
    assert rival.get(mine.event_id) is None  # nothing of it was recorded
    assert rival.count() == 3  # each attempt lost to one of the rival's appends
    assert rival.verify().ok


def test_import_checks_the_whole_file_before_writing(event_store, sample_events):
    source = event_store("prod")
    fill(source, sample_events)
    dump = io.StringIO()
    source.export_jsonl(dump)
    lines = dump.getvalue().splitlines(keepends=True)
    swapped = "".join([lines[0], lines[2], lines[1], *lines[3:]])
    target = event_store("copy")
    with pytest.raises(EventError, match=r"line 2 .*does not link"):
        target.import_jsonl(io.StringIO(swapped))
    with pytest.raises(EventError, match="line 1: not an exported event"):
        target.import_jsonl(io.StringIO('{"entry_id": "1-0", "hash": "x", "event": {"type": "Nope"}}\n'))
    assert target.count() == 0


def test_foreign_entries_are_skipped_counted_and_kept_out_of_the_chain(event_store, redis_client, sample_events):
    store = event_store("s2")
    events = fill(store, sample_events)
    own = [s.entry_id for s in store.read()]
    junk = redis_client.xadd(stream_key("s2"), {"e": b"<junk>", "type": b"EpochTrained"}).decode()
    copy = redis_client.xadd(stream_key("s2"), redis_client.xrange(stream_key("s2"), own[0], own[0])[0][1]).decode()

    reader = EventStore(redis_client, "s2")
    assert [s.entry_id for s in reader.read()] == own
    assert [s.event.event_id for s in reader.read(types=["EpochTrained"])] == [events["EpochTrained"].event_id]
    assert [s.entry_id for s in reader.last(3)] == own[-3:]
    assert reader.foreign_seen == sorted([junk, copy])
    report = reader.verify()
    assert report.ok and report.checked == len(LINEAGE) and report.foreign == (junk, copy)

    dump = io.StringIO()
    assert reader.export_jsonl(dump) == len(LINEAGE)  # a restore of the export is the namespace without them
    redis_client.flushdb()
    restored = event_store("s2")
    assert restored.import_jsonl(io.StringIO(dump.getvalue())) == len(LINEAGE)
    assert restored.verify() == VerifyReport(True, len(LINEAGE))


def test_an_own_entry_disguised_as_foreign_breaks_the_chain(event_store, redis_client, sample_events):
    store = event_store()
    fill(store, sample_events)
    entries = list(store.read())
    rewrite_stream(redis_client, "test", lambda i, f: {**f, b"id": b"someone-else"} if i == 2 else f)
    report = store.verify()
    assert not report.ok and report.foreign == (entries[2].entry_id,)
    assert report.first_broken == entries[3].entry_id and "prev_hash" in report.reason
