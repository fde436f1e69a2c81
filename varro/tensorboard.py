"""The per-day report as TensorBoard scalars, one run directory per namespace.

Written with tensorboardX (no TensorFlow needed). The step is the day's index
in the namespace and the wall time is the day's midnight UTC, so the same log
always writes the same curves, and TensorBoard's own reader reads them back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from varro.report import DayRow

# tag -> DayRow attribute
SCALARS = {
    "eval/win_vs_base": "win_vs_base",
    "eval/win_vs_base_low": "win_vs_base_low",
    "eval/win_vs_base_high": "win_vs_base_high",
    "eval/win_vs_parent": "win_vs_parent",
    "judge/raw_score": "judge_raw",
    "judge/fallback_share": "fallback_share",
    "judge/position_bias": "position_bias",
    "generation/structure": "avg_structure_score",
    "train/kl_old_k3": "kl_old",
    "train/kl_ref_k3": "kl_ref",
    "train/clip_frac_low": "clip_low",
    "train/clip_frac_high": "clip_high",
    "train/improvement": "improvement",
    "train/reward_unscaled": "reward_unscaled",
}


def write_scalars(rows: Sequence[DayRow], log_dir: Path) -> list[Path]:
    """One event-file directory per namespace under `log_dir`; returns them."""
    from tensorboardX import SummaryWriter

    written = []
    for ns in dict.fromkeys(row.ns for row in rows):
        run_dir = log_dir / (ns or "default")
        writer = SummaryWriter(logdir=str(run_dir), flush_secs=3600)
        for step, row in enumerate(r for r in rows if r.ns == ns):
            walltime = dt.datetime.fromisoformat(row.date).replace(tzinfo=dt.UTC).timestamp()
            for tag, attr in SCALARS.items():
                value = getattr(row, attr)
                if value is not None:
                    writer.add_scalar(tag, float(value), global_step=step, walltime=walltime)
        writer.close()
        written.append(run_dir)
    return written
