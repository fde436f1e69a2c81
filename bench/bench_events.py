"""Event-log throughput on the embedded Valkey (AOF on, appendfsync always).

    .venv/bin/python bench/bench_events.py [--events 100000] [--single 2000] [--batch 1000]

Measures, in one run on one fresh server: append one event per call (one
script and one fsync each), append in pipelined batches (`append_many`), then
read back the whole namespace raw (XRANGE only), read + decode (`read()`), and
walk the hash chain (`verify()`). Events are DailyRunRequested envelopes
(~330 bytes encoded) with distinct ids.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

import varro  # noqa: E402,F401  (first: BLAS preload before anything imports mlx)
from events import codec  # noqa: E402
from events.ids import derive_event_id  # noqa: E402
from events.schema import DailyRunRequested  # noqa: E402
from events.server import EmbeddedServer  # noqa: E402
from events.store import EventStore  # noqa: E402


def make_events(ns: str, start: int, n: int) -> list[DailyRunRequested]:
    return [
        DailyRunRequested(
            event_id=derive_event_id(ns, "DailyRunRequested", "2025-01-01", [str(i)]),
            ns=ns,
            date="2025-01-01",
            correlation_id=f"bench-{i}",
            trigger="bench",
            seed=i,
            source="feeds",
        )
        for i in range(start, start + n)
    ]


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="namespace size for batch append and reads")
    parser.add_argument("--single", type=int, default=2_000, help="events appended one call at a time")
    parser.add_argument("--batch", type=int, default=1_000, help="events per append_many call")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="varro-bench-"))
    server = EmbeddedServer(data_dir)
    client = redis.Redis.from_url(server.start())
    rows: list[tuple[str, int, float]] = []
    try:
        single = EventStore(client, "bench-single")
        events = make_events(single.ns, 0, args.single)
        secs, _ = timed(lambda: [single.append(e) for e in events])
        rows.append(("append, 1 event per call", args.single, secs))

        secs, _ = timed(lambda: [single.append(e) for e in events[: args.single // 4]])
        rows.append(("append, already recorded (dedup)", args.single // 4, secs))

        store = EventStore(client, "bench")
        events = make_events(store.ns, 0, args.events)

        def batched() -> None:
            for i in range(0, len(events), args.batch):
                store.append_many(events[i : i + args.batch])

        secs, _ = timed(batched)
        rows.append((f"append_many, batches of {args.batch}", args.events, secs))
        assert store.count() == args.events

        secs, n = timed(lambda: sum(1 for _ in store.raw_entries()))
        rows.append(("read raw (XRANGE pages, no decode)", n, secs))
        secs, n = timed(lambda: sum(1 for _ in store.read()))
        rows.append(("read + decode (store.read)", n, secs))
        secs, report = timed(store.verify)
        assert report.ok, report
        rows.append(("verify chain (hash + decode)", report.checked, secs))
        raw = next(store.read()).raw
        aof = sum(p.stat().st_size for p in (data_dir / "valkey" / "appendonly").iterdir())
    finally:
        client.close()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(
        f"embedded Valkey, unix socket, AOF appendfsync=always; event = {len(raw)} bytes encoded "
        f"({type(codec.decode(raw)).__name__}); AOF after run: {aof / 1e6:.1f} MB"
    )
    print(f"{'operation':<38} {'events':>8} {'seconds':>9} {'events/s':>10}")
    for name, n, secs in rows:
        print(f"{name:<38} {n:>8} {secs:>9.2f} {n / secs:>10,.0f}")
    base = rows[0][1] / rows[0][2]
    print(f"batched / single append speed-up: {rows[2][1] / rows[2][2] / base:.1f}x")


if __name__ == "__main__":
    main()
