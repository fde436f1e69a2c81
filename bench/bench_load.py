"""Load: `varro status`, `varro rebuild` and `varro events verify` on 1,000 synthetic days, alone and beside
100 other namespaces.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_load.py [--days 1000] [--namespaces 100] [--days-each 10]
                                                           [--headlines 16] [--repeat 3]

On one fresh embedded server (AOF on, appendfsync always) in a temporary data
directory: appends `--days` days of the daily chain to namespace `load`
(tests/synthetic_days.py: valid events through `EventStore.append_many`, five a
day, `--headlines` headlines with 8 roll-outs each), then times each command as
a user runs it (a `python -m varro.cli` process, so Python and import start-up
are included; `varro --version` is timed too, as the floor). Then it adds
`--namespaces` namespaces of `--days-each` days and times the same commands
again, on `load` and on one of the small namespaces, plus `varro namespaces`.
Each synthetic checkpoint gets an empty weights file in the checkpoint store,
so `rebuild` can point its links (it never reads the weights).
Each figure is the median of `--repeat` runs; the table is Markdown.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import redis  # noqa: E402
from synthetic_days import append_days, dates  # noqa: E402

import varro  # noqa: E402,F401  (first: BLAS preload before anything imports mlx)
from events.server import EmbeddedServer  # noqa: E402
from events.store import EventStore  # noqa: E402

FIRST = "2022-01-03"


def cli(data_dir: Path, *args: str) -> float:
    """Seconds one `varro ARGS` takes; the command must succeed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("REDIS_URL", None)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "varro.cli", *args, *(["--data-dir", str(data_dir)] if args[0] != "--version" else [])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(
            f"varro {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return elapsed


def place_checkpoints(store: EventStore, data_dir: Path) -> int:
    """An empty weights file for each synthetic checkpoint, so `rebuild` can point its links (it never
    reads them); returns how many."""
    from events.schema import EpochTrained
    from varro.checkpoints import WEIGHTS, store_dir

    made = 0
    for stored in store.read(types=["EpochTrained"]):
        assert isinstance(stored.event, EpochTrained)
        target = store_dir(data_dir) / stored.event.checkpoint.sha256
        target.mkdir(parents=True, exist_ok=True)
        (target / WEIGHTS).touch()
        made += 1
    return made


def median_of(repeat: int, data_dir: Path, *args: str) -> float:
    return statistics.median(cli(data_dir, *args) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--days-each", type=int, default=10)
    parser.add_argument("--headlines", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="varro-bench-load-"))
    server = EmbeddedServer(data_dir)
    server.start()
    rows: list[tuple[str, str, float]] = []
    try:
        client = redis.Redis.from_url(server.url)
        t0 = time.perf_counter()
        n = append_days(EventStore(client, "load"), dates(FIRST, opts.days), headlines=opts.headlines)
        append_s = time.perf_counter() - t0
        place_checkpoints(EventStore(client, "load"), data_dir)
        memory = client.info("memory")["used_memory_human"]
        print(f"appended {n} events ({opts.days} days, {opts.headlines} headlines a day) in {append_s:.1f}s; {memory}")
        load = f"`load` ({opts.days} days, {n} events)"
        rows.append(("`varro --version` (start-up floor)", "-", median_of(opts.repeat, data_dir, "--version")))
        for name, args in (
            ("`varro status`", ("status", "--ns", "load")),
            ("`varro rebuild`", ("rebuild", "--ns", "load")),
            ("`varro events verify`", ("events", "verify", "--ns", "load")),
        ):
            rows.append((name, load, median_of(opts.repeat, data_dir, *args)))

        t0 = time.perf_counter()
        for i in range(opts.namespaces):
            store = EventStore(client, f"ns{i:03d}")
            append_days(store, dates(FIRST, opts.days_each), headlines=opts.headlines)
            place_checkpoints(store, data_dir)
        print(f"added {opts.namespaces} namespaces of {opts.days_each} days in {time.perf_counter() - t0:.1f}s")
        beside = f"{load}, beside {opts.namespaces} namespaces"
        one = f"ns{opts.namespaces // 2:03d}"
        small = f"`{one}` ({opts.days_each} days), beside {opts.namespaces - 1} others and `load`"
        for name, args, where in (
            ("`varro status`", ("status", "--ns", "load"), beside),
            ("`varro rebuild`", ("rebuild", "--ns", "load"), beside),
            ("`varro events verify`", ("events", "verify", "--ns", "load"), beside),
            ("`varro status`", ("status", "--ns", one), small),
            ("`varro rebuild`", ("rebuild", "--ns", one), small),
            ("`varro events verify`", ("events", "verify", "--ns", one), small),
            ("`varro namespaces`", ("namespaces",), f"{opts.namespaces + 1} namespaces"),
        ):
            rows.append((name, where, median_of(opts.repeat, data_dir, *args)))
        client.close()
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    with open("/proc/loadavg") as fh:
        print(f"load average after: {fh.read().split()[:3]}")
    print(f"\n| Command | Namespace | Median of {opts.repeat} (s) |\n|---|---|---|")
    for name, where, seconds in rows:
        print(f"| {name} | {where} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
