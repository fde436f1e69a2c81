"""Property: events delivered duplicated and out of order give the same projections and no duplicate jobs.

At-least-once delivery means a consumer sees an entry again after a reclaim,
and sees entries out of order when one is reclaimed after later ones were
handled. Two consumers must not care:

- the projector (`varro.projections.project`) gives the same bytes for any
  such delivery of a log in any order it could have been appended in: each
  event after the events it names and the epoch whose checkpoint it starts
  from, and the events of one (type, date) in their order (a forced re-run
  supersedes the earlier event: that order is the meaning);
- the dispatcher's planning (`workers.dispatcher.plan` and `Dispatcher.enqueue`,
  against the real server) enqueues each job once, and exactly the jobs that
  one in-order delivery enqueues.

The log is the hand-built three-day one of the projection tests, with forced
re-runs (tests/projection_log.py).
"""

from __future__ import annotations

from collections import Counter

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from projection_log import NS, build_log

from events.schema import EpochTrained, RolloutsGenerated
from events.store import EventStore
from varro.config import load_config
from varro.projections import project
from workers.dispatcher import FETCH_QUEUE, MODEL_QUEUE, Dispatcher, plan
from workers.queues import queue

LOG = build_log()["events"]
EXPECTED = project(LOG, NS)


def kind(event) -> tuple[str, str]:
    return type(event).__name__, event.date


def causes(events) -> dict[str, set[str]]:
    """event id -> the ids of the events it must follow in any append order: those it names (its cause,
    its inputs), the epoch that produced the checkpoint it starts from, and the earlier events of its
    (type, date), which it supersedes when forced."""
    ids = {e.event_id for e in events}
    producer = {e.checkpoint.sha256: e.event_id for e in events if isinstance(e, EpochTrained)}
    earlier: dict[tuple[str, str], list[str]] = {}
    out = {}
    for event in events:
        named = {v for v in msgspec.structs.asdict(event).values() if isinstance(v, str) and v in ids}
        used = event.parent_checkpoint if isinstance(event, EpochTrained) else getattr(event, "checkpoint", None)
        if isinstance(event, RolloutsGenerated | EpochTrained) and used is not None and used.sha256 in producer:
            named.add(producer[used.sha256])
        out[event.event_id] = (named | set(earlier.get(kind(event), []))) - {event.event_id}
        earlier.setdefault(kind(event), []).append(event.event_id)
    return out


@st.composite
def deliveries(draw, events):
    """`events` in any order a log could have been appended in (each after what it must follow; see
    `causes`), with redelivered copies, each copy after the entry's first delivery."""
    after = causes(events)
    pending, done, sequence = list(events), set(), []
    while pending:
        ready = [e for e in pending if after[e.event_id] <= done]
        event = draw(st.sampled_from(ready))
        pending.remove(event)
        done.add(event.event_id)
        sequence.append(event)
    copies = draw(st.lists(st.tuples(st.integers(0, len(events) - 1), st.integers(0, 10_000)), max_size=len(events)))
    for which, offset in copies:
        event = sequence[which]
        first = sequence.index(event)
        sequence.insert(first + 1 + offset % (len(sequence) - first), event)
    return sequence


def test_the_log_itself_is_one_of_the_orders_drawn():
    after, seen = causes(LOG), set()
    for event in LOG:
        assert after[event.event_id] <= seen
        seen.add(event.event_id)


@settings(max_examples=60, deadline=None)
@given(deliveries(LOG))
def test_the_projection_of_any_duplicated_reordered_delivery_is_the_log_s(delivered):
    got = project(delivered, NS)
    assert sorted(got) == sorted(EXPECTED)
    assert [path for path in EXPECTED if got[path] != EXPECTED[path]] == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delivered=deliveries(LOG), shards=st.sampled_from([1, 2]))
def test_planning_any_duplicated_reordered_delivery_enqueues_each_job_once(redis_client, tmp_path, delivered, shards):
    redis_client.flushdb()
    store = EventStore(redis_client, NS)
    store.append_many(LOG)
    cfg = load_config(
        overrides={"ns": NS, "data_dir": str(tmp_path), "workers": {"generate_shards": shards}}, environ={}
    )
    dispatcher = Dispatcher(redis_client, cfg, name="prop")
    expected = {spec.job_id for event in LOG for spec in plan(event, store, shards=shards)}

    accepted: Counter[str] = Counter()
    planned = set()
    for event in delivered:
        for spec in plan(event, store, shards=shards):
            planned.add(spec.job_id)
            accepted[spec.job_id] += dispatcher.enqueue(spec)
    assert planned == expected
    assert accepted == Counter(dict.fromkeys(expected, 1))
    jobs = queue(FETCH_QUEUE, redis_client).get_job_ids() + queue(MODEL_QUEUE, redis_client).get_job_ids()
    assert sorted(jobs) == sorted(expected)
