"""Sweep training settings on the bundled sample days and judge each on the held-out panel.

Each setting is its own namespace in one data directory, run from the same base
model over the same days with the same seeds (`varro run`), then judged against
the base on the bundled sample panel (`varro ab --panel sample`), whose
headlines no setting ever trained on. Prints one Markdown row per setting; the
table in RESULTS.md is this script's output.

    .venv/bin/python bench/sweep_defaults.py --data-dir /tmp/varro-sweep [--to 2025-08-13] [--k 8]
    .venv/bin/python bench/sweep_defaults.py --only lr2e-4_mb8 ...   # one setting
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VARRO = [sys.executable, "-m", "varro.cli"]

# name -> environment overrides (VARRO_<SECTION>__<KEY>)
SETTINGS: dict[str, dict[str, str]] = {
    "old-default lr2e-5 mb4": {"VARRO_TRAIN__LEARNING_RATE": "2e-5", "VARRO_TRAIN__MINIBATCHES": "4"},
    "lr2e-4 mb4": {"VARRO_TRAIN__LEARNING_RATE": "2e-4", "VARRO_TRAIN__MINIBATCHES": "4"},
    "lr2e-4 mb8": {"VARRO_TRAIN__LEARNING_RATE": "2e-4", "VARRO_TRAIN__MINIBATCHES": "8"},
    "lr5e-4 mb4": {"VARRO_TRAIN__LEARNING_RATE": "5e-4", "VARRO_TRAIN__MINIBATCHES": "4"},
    "lr1e-3 mb8": {"VARRO_TRAIN__LEARNING_RATE": "1e-3", "VARRO_TRAIN__MINIBATCHES": "8"},
    "lr2e-4 mb8 grpo": {
        "VARRO_TRAIN__LEARNING_RATE": "2e-4",
        "VARRO_TRAIN__MINIBATCHES": "8",
        "VARRO_TRAIN__VARIANT": "grpo",
        "VARRO_TRAIN__EPS_LOW": "0.2",
        "VARRO_TRAIN__EPS_HIGH": "0.28",
    },
    "lr2e-4 mb8 full-loss": {
        "VARRO_TRAIN__LEARNING_RATE": "2e-4",
        "VARRO_TRAIN__MINIBATCHES": "8",
        "VARRO_TRAIN__LOSS_ON": "full",
    },
    "lr2e-4 mb8 ema0.9": {
        "VARRO_TRAIN__LEARNING_RATE": "2e-4",
        "VARRO_TRAIN__MINIBATCHES": "8",
        "VARRO_TRAIN__EMA_BASELINE": "0.9",
    },
    "lr1e-3 mb8 lora": {
        "VARRO_TRAIN__LEARNING_RATE": "1e-3",
        "VARRO_TRAIN__MINIBATCHES": "8",
        "VARRO_TRAIN__LORA": "true",
    },
}


def _ns(name: str) -> str:
    return "sweep-" + "".join(c if c.isalnum() else "-" for c in name).strip("-")


def run_setting(name: str, env: dict[str, str], data_dir: str, to: str, k: int) -> dict:
    ns = _ns(name)
    full = {**os.environ, **env, "VARRO_DATA_DIR": data_dir, "VARRO_EVAL__PANEL": "none", "VARRO_EVAL__K": str(k)}
    started = time.perf_counter()
    # one base seed for every setting: the same day draws the same uniforms whatever the namespace
    subprocess.run(
        [*VARRO, "run", "--ns", ns, "--to", to, "--seed", "1234"], env=full, check=True, stdout=subprocess.DEVNULL
    )
    wall = time.perf_counter() - started
    rows = json.loads(
        subprocess.run(
            [*VARRO, "report", "--ns", ns, "--format", "json"], env=full, check=True, capture_output=True, text=True
        ).stdout
    )
    last = [r for r in rows if r["train_steps"] is not None][-1]
    ab = json.loads(
        subprocess.run(
            [*VARRO, "ab", "--ns", ns, "--a", "base", "--b", last["date"], "--panel", "sample", "--json"],
            env=full,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    trained = [r for r in rows if r["train_steps"] is not None]
    return {
        "setting": name,
        "ns": ns,
        "wall_s": round(wall, 1),
        "win": ab["win_rate"],
        "diff": ab["score_diff"],
        "structure": (ab["a"]["structure"], ab["b"]["structure"]),
        "degenerate_b": ab["b"]["degenerate"],
        "leaked_b": ab["b"]["leaked"],
        "truncated_b": ab["b"]["truncated"],
        "kl_old_mean": sum(r["kl_old"] for r in trained) / len(trained),
        "clip_low_mean": sum(r["clip_low"] for r in trained) / len(trained),
        "clip_high_mean": sum(r["clip_high"] for r in trained) / len(trained),
        "headlines": ab["headlines"],
        "k": ab["k"],
    }


def row(r: dict) -> str:
    w, d = r["win"], r["diff"]
    return (
        f"| {r['setting']} | {w['value']:.3f} [{w['low']:.3f}, {w['high']:.3f}] | "
        f"{d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] | {r['structure'][0]:.3f} → {r['structure'][1]:.3f} | "
        f"{r['kl_old_mean']:.2e} | {r['clip_low_mean']:.3f} / {r['clip_high_mean']:.3f} | "
        f"{r['degenerate_b']:.1%} | {r['leaked_b']:.1%} | {r['truncated_b']:.1%} | {r['wall_s']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--to", default="2025-08-13")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--only", action="append", help="Run only this setting (repeatable).")
    parser.add_argument("--out", help="Append each result as a JSON line to this file.")
    args = parser.parse_args()
    names = args.only or list(SETTINGS)
    print(f"load average before: {os.getloadavg()}", flush=True)
    print(
        "| setting | win rate vs base [95% CI] | judge score Δ [95% CI] | structure base → B | KL π_old (mean/day) "
        "| clip low / high | degenerate | leaked | truncated | run s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for name in names:
        result = run_setting(name, SETTINGS[name], args.data_dir, args.to, args.k)
        print(row(result), flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(result) + "\n")
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
