"""Under load, the lookups a job makes for its parent read a constant number of log entries.

A namespace of 1,000 synthetic days (tests/synthetic_days.py, appended
through the store) beside one of 10 days: each lookup the daily chain makes
(the parent checkpoint, the recorded base, the next jobs an event makes due,
a job's own identity) must read as many stream entries in the big one as in
the small one, a handful at most, through the store's date and id indexes.
Entries are counted from the server's own replies to XRANGE / XREVRANGE /
XREAD, however the store issues them (one call, pages, pipelines). Times are
for bench/bench_load.py and RELIABILITY.md, not asserted here.
"""

from __future__ import annotations

from collections import Counter

import pytest
from synthetic_days import append_days, dates

from events.ids import shift_date
from jobs.context import base_checkpoint, identify, parent_checkpoint, trained_after
from varro.config import load_config
from workers.dispatcher import missing_stages, plan, resume
from workers.runtime import Runtime

STREAM_READS = ("XRANGE", "XREVRANGE", "XREAD", "XREADGROUP")
FIRST = "2022-01-03"


class EntriesRead:
    """Counts the stream entries in the server's replies to this client (pipelines included)."""

    def __init__(self, client):
        self.entries: Counter[str] = Counter()
        for command in STREAM_READS:
            original = client.response_callbacks.get(command)

            def counted(response, command=command, original=original, **options):
                self.entries[command] += _entries(command, response)
                return original(response, **options) if original else response

            client.set_response_callback(command, counted)

    def during(self, fn) -> int:
        self.entries.clear()
        fn()
        return sum(self.entries.values())


def _entries(command: str, response) -> int:
    if not response:
        return 0
    if command in ("XRANGE", "XREVRANGE"):
        return len(response)
    rows = response.values() if isinstance(response, dict) else [r[1] for r in response]
    return sum(len(r[0] if isinstance(r, list) and r and isinstance(r[0], list) else r) for r in rows)


@pytest.fixture(scope="module")
def namespaces(redis_server, tmp_path_factory):
    import redis as redis_py

    client = redis_py.Redis.from_url(redis_server.url, decode_responses=False)
    client.flushdb()
    cfg = load_config(overrides={"ns": "big", "data_dir": str(tmp_path_factory.mktemp("load"))}, environ={})
    rt = Runtime.create(cfg, redis=client)
    sizes = {"small": 10, "big": 1000}
    for ns, n in sizes.items():
        append_days(rt.store(ns), dates(FIRST, n), headlines=1)
    yield rt, sizes, EntriesRead(client)
    rt.models.release()
    client.flushdb()
    client.close()


def lookups(rt: Runtime, ns: str, n: int):
    """What the jobs and the dispatcher look up on the namespace's last day, each as one call."""
    store = rt.store(ns)
    last = shift_date(FIRST, n - 1)
    ctx = rt.context(ns, last)
    return {
        "parent_checkpoint (train, generate)": lambda: parent_checkpoint(ctx, last),
        "base_checkpoint (train with beta > 0)": lambda: base_checkpoint(ctx),
        "trained_after (publishing the rolling link)": lambda: trained_after(ctx, shift_date(last, -1)),
        "identify (every job's prologue)": lambda: identify(ctx, "HeadlinesFetched", last, [], force=False),
        "identify, forced": lambda: identify(ctx, "HeadlinesFetched", last, [], force=True),
        "plan HeadlinesFetched": lambda: plan(store.latest("HeadlinesFetched", last), store),
        "plan EpochTrained": lambda: plan(store.latest("EpochTrained", shift_date(last, -1)), store),
        "plan RolloutsGenerated": lambda: plan(store.latest("RolloutsGenerated", last), store),
        "missing_stages and resume (backfill)": lambda: (missing_stages(store, last), resume(store, last)),
    }


def test_a_job_s_parent_lookups_read_as_few_entries_in_1000_days_as_in_10(namespaces):
    rt, sizes, counter = namespaces
    assert rt.store("big").count() > 4900 and rt.store("big").verify().ok  # the synthetic days are a valid log
    small = {name: counter.during(fn) for name, fn in lookups(rt, "small", sizes["small"]).items()}
    big = {name: counter.during(fn) for name, fn in lookups(rt, "big", sizes["big"]).items()}
    assert big == small
    assert max(big.values()) <= 12, big  # one or two entries per event the lookup needs
    # the counter sees a whole-stream read: what a lookup that scanned the log would cost
    assert counter.during(lambda: list(rt.store("big").read())) == rt.store("big").count()
