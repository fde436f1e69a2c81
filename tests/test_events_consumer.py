"""Consumer groups on a real server: ack, reclaim after a consumer dies, dead letters."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest
import redis as redis_py

from events.consumer import Consumer
from events.errors import EventError
from events.ids import derive_event_id
from events.schema import DailyRunRequested, HeadlineSource
from events.store import stream_key

pytestmark = pytest.mark.timeout(120)


def run_event(n: int) -> DailyRunRequested:
    return DailyRunRequested(
        event_id=derive_event_id("test", "DailyRunRequested", "2025-01-01", [str(n)]),
        ns="test",
        date="2025-01-01",
        correlation_id="c",
        trigger="test",
        seed=n,
        source=HeadlineSource(kind="feeds"),
    )


def consumer(redis_client, name: str, **kwargs) -> Consumer:
    c = Consumer(redis_client, "test", "dispatch", name, **{"min_idle_ms": 50, **kwargs})
    c.ensure_group()
    return c


def test_each_entry_is_delivered_once_and_acked(redis_client, event_store):
    store = event_store()
    for i in range(3):
        store.append(run_event(i))
    a = consumer(redis_client, "a")
    a.ensure_group()  # idempotent
    got = a.read(count=10, block_ms=10)
    assert [d.event.seed for d in got] == [0, 1, 2] and all(d.deliveries == 1 for d in got)
    assert a.pending() == 3
    for d in got:
        a.ack(d.entry_id)
    assert a.pending() == 0
    assert a.read(block_ms=10) == []


def _take_one_and_die(url: str) -> None:
    taken = consumer(redis_py.Redis.from_url(url), "doomed").read(count=1, block_ms=10)
    os._exit(17 if [d.event.seed for d in taken] == [0] else 1)


def test_entries_of_a_dead_consumer_are_reclaimed(redis_client, redis_server, event_store):
    store = event_store()
    store.append(run_event(0))
    store.append(run_event(1))
    ctx = multiprocessing.get_context("fork")
    doomed = ctx.Process(target=_take_one_and_die, args=(redis_server.url,))
    doomed.start()
    doomed.join(30)
    assert doomed.exitcode == 17  # it took entry 0 and died before acking: the entry stays pending
    assert Consumer(redis_client, "test", "dispatch", "x").pending() == 1

    survivor = consumer(redis_client, "survivor", min_idle_ms=60_000)
    fresh = survivor.read(block_ms=10)
    assert [d.event.seed for d in fresh] == [1]  # entry 0 has not been idle long enough to steal yet
    survivor.ack(fresh[0].entry_id)

    patient = consumer(redis_client, "patient", min_idle_ms=50)
    time.sleep(0.1)
    reclaimed = patient.read(block_ms=10)
    assert [(d.event.seed, d.deliveries) for d in reclaimed] == [(0, 2)]
    patient.ack(reclaimed[0].entry_id)
    assert patient.pending() == 0


def test_garbage_entry_is_dead_lettered_and_the_rest_flows(redis_client, event_store):
    store = event_store()
    store.append(run_event(0))
    poison = redis_client.xadd(stream_key("test"), {"e": b"\xc1not msgpack"}).decode()
    no_payload = redis_client.xadd(stream_key("test"), {"junk": b"1"}).decode()
    store_entry = store.entry_id(run_event(0).event_id)
    c = consumer(redis_client, "a")
    got = c.read(block_ms=10)
    assert [d.entry_id for d in got] == [store_entry]
    dead = {d.entry_id: d for d in c.dead_letters()}
    assert set(dead) == {poison, no_payload}
    assert "undecodable" in dead[poison].reason and dead[poison].raw == b"\xc1not msgpack"
    assert "no event payload" in dead[no_payload].reason
    assert c.pending() == 1  # only the good entry, awaiting its ack


def test_event_failing_max_deliveries_times_is_dead_lettered(redis_client, event_store):
    store = event_store()
    store.append(run_event(7))
    c = consumer(redis_client, "a", max_deliveries=3)
    outcomes = []
    for _ in range(3):
        time.sleep(0.06)
        (delivery,) = c.read(block_ms=10)
        outcomes.append((delivery.deliveries, c.fail(delivery, f"boom {delivery.deliveries}")))
    assert outcomes == [(1, False), (2, False), (3, True)]
    time.sleep(0.06)
    assert c.read(block_ms=10) == []
    (dead,) = c.dead_letters()
    assert dead.reason == "boom 3" and dead.deliveries == 3
    assert dead.entry_id == store.entry_id(run_event(7).event_id)
    assert c.pending() == 0


def test_entry_that_keeps_killing_its_consumer_is_dead_lettered(redis_client, event_store):
    store = event_store()
    store.append(run_event(1))
    for i in range(3):  # each consumer takes it and dies without ack or fail
        time.sleep(0.06)
        assert len(consumer(redis_client, f"crashy{i}", max_deliveries=2).read(block_ms=10)) == (1 if i < 2 else 0)
    (dead,) = consumer(redis_client, "x").dead_letters()
    assert dead.deliveries == 3 and "delivered 3 times (max 2)" in dead.reason


def test_reading_without_a_group_names_the_fix(redis_client, event_store):
    event_store().append(run_event(0))
    with pytest.raises(EventError, match="call ensure_group"):
        Consumer(redis_client, "test", "missing", "a").read(block_ms=10)


def test_a_copy_of_an_entry_not_written_by_the_store_is_dead_lettered_as_foreign(redis_client, event_store):
    store = event_store()
    store.append(run_event(0))
    original = store.entry_id(run_event(0).event_id)
    fields = redis_client.xrange(stream_key("test"), original, original)[0][1]
    copy = redis_client.xadd(stream_key("test"), fields).decode()
    c = consumer(redis_client, "a")
    assert [d.entry_id for d in c.read(block_ms=10)] == [original]
    (dead,) = c.dead_letters()
    assert dead.entry_id == copy and dead.reason.startswith("foreign: entry not written by Varro's append")
    assert original in dead.reason
