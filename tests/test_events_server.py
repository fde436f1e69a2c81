"""The embedded server: shared, persistent across a kill -9, safe to start twice at once."""

from __future__ import annotations

import multiprocessing

import pytest
import redis as redis_py

from events.connection import connect
from events.ids import derive_event_id
from events.schema import DailyRunRequested, HeadlineSource
from events.server import EmbeddedServer
from events.store import EventStore

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(tmp_path):
    embedded = EmbeddedServer(tmp_path)
    yield embedded
    embedded.stop()


def run_event(n: int) -> DailyRunRequested:
    return DailyRunRequested(
        event_id=derive_event_id("ops", "DailyRunRequested", "2025-01-01", [str(n)]),
        ns="ops",
        date="2025-01-01",
        correlation_id="c",
        trigger="test",
        seed=n,
        source=HeadlineSource(kind="feeds"),
    )


def test_killed_server_restarts_with_every_appended_event(server, tmp_path):
    store = EventStore(connect(None, tmp_path), "ops")
    appended = [store.append(run_event(i)).entry_id for i in range(50)]
    first_pid = server.pid()
    assert server.kill() == first_pid  # SIGKILL: no chance to flush anything on the way out

    status = server.status()
    assert not status.running
    store = EventStore(connect(None, tmp_path), "ops")  # restarts the server on demand
    assert server.pid() != first_pid
    assert [s.entry_id for s in store.read()] == appended
    assert [s.event.seed for s in store.read()] == list(range(50))
    assert store.verify().ok
    assert not store.append(run_event(3)).created  # the id index survived too


def test_start_reuses_a_running_server_and_reports_status(server, tmp_path):
    url = server.start()
    pid = server.pid()
    assert EmbeddedServer(tmp_path).start() == url
    assert server.pid() == pid
    status = server.status()
    assert status.running and status.aof and status.appendfsync == "always"
    assert url.startswith("unix://") and status.version
    assert server.stop() is True
    assert server.stop() is False
    assert not server.status().running


def _start(data_dir, queue) -> None:
    server = EmbeddedServer(data_dir)
    queue.put((server.start(), server.pid()))


def test_two_processes_starting_at_once_share_one_server(server, tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_start, args=(tmp_path, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert results[0] == results[1]
    client = redis_py.Redis.from_url(results[0][0])
    assert client.ping()
    assert int(client.info("server")["process_id"]) == results[0][1]


def test_server_outlives_the_process_that_started_it(server, tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    p = ctx.Process(target=_start, args=(tmp_path, queue))
    p.start()
    url, _ = queue.get(timeout=60)
    p.join(30)
    assert p.exitcode == 0
    assert redis_py.Redis.from_url(url).ping()


def test_deep_data_dir_gets_a_short_socket(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    embedded = EmbeddedServer(deep)
    try:
        url = embedded.start()
        assert len(str(embedded.socket_path)) <= 100
        assert redis_py.Redis.from_url(url).ping()
    finally:
        embedded.stop()


def test_external_url_is_used_as_given(redis_server, tmp_path):
    client = connect(redis_server.url, tmp_path / "unused")
    assert client.ping()
    assert not (tmp_path / "unused").exists()
