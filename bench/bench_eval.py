"""What a held-out evaluation costs next to a day of the loop.

Times `varro ab --a base --b DAY --panel sample --force` (a new evaluation each
time: both sides generate k answers to every panel headline, then the judge
compares them) for each k, alternating the k values over repeats, and prints
the median and range and the load average. A day's own generation and
training times are in the main job's figures in BENCHMARKS.md.

    .venv/bin/python bench/bench_eval.py --data-dir DIR --ns NS --day 2025-08-12 [--k 4 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

VARRO = [sys.executable, "-m", "varro.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--ns", required=True)
    parser.add_argument("--day", required=True, help="The trained day whose checkpoint is side B.")
    parser.add_argument("--k", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "VARRO_DATA_DIR": args.data_dir}
    print(f"load average before: {os.getloadavg()}")
    times: dict[int, list[float]] = {k: [] for k in args.k}
    sides: dict[int, list[float]] = {k: [] for k in args.k}
    pairs: dict[int, int] = {}
    for _ in range(args.repeats):
        for k in args.k:
            started = time.perf_counter()
            out = subprocess.run(
                [
                    *VARRO,
                    "ab",
                    "--ns",
                    args.ns,
                    "--a",
                    "base",
                    "--b",
                    args.day,
                    "--panel",
                    "sample",
                    "--k",
                    str(k),
                    "--force",
                    "--json",
                ],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            times[k].append(time.perf_counter() - started)
            event = json.loads(out)
            sides[k].append(event["a"]["wall_s"] + event["b"]["wall_s"])
            pairs[k] = event["pairs"]
    print("| k | pairs | whole command s (median, range) | generating both sides s (median) |")
    print("|---|---|---|---|")
    for k in args.k:
        t = times[k]
        print(
            f"| {k} | {pairs[k]} | {statistics.median(t):.1f} ({min(t):.1f}–{max(t):.1f}) | "
            f"{statistics.median(sides[k]):.1f} |"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
