"""PNG charts of the per-day report, one metric a chart, one line per namespace.

Headless (matplotlib's Agg backend). Each PNG carries the exact series it
draws in its metadata (`varro-series`, JSON), so a reader, and the tests, can
check what a chart shows without trusting pixels. Win rates get their 95%
interval as a band and a dashed line at 0.5 (no difference).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from varro.report import DayRow

# (file stem, DayRow attribute, title, y label)
METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("win_vs_base", "win_vs_base", "Held-out win rate against the base model", "win rate (ties half)"),
    ("judge_raw", "judge_raw", "Judge score (unscaled), per day", "mean raw score"),
    ("structure", "avg_structure_score", "Structure score of the day's roll-outs", "share of six sections"),
    ("kl_old", "kl_old", "KL to π_old after each epoch (k3)", "KL"),
    ("improvement", "improvement", "Improvement: preferred minus dispreferred Δlog π", "nats per token"),
    ("fallback", "fallback_share", "Share of groups ranked by the fallback judge", "share"),
)
_BANDS = {"win_vs_base": ("win_vs_base_low", "win_vs_base_high")}


@dataclass(frozen=True)
class Chart:
    path: Path
    metric: str
    series: dict[str, list[tuple[str, float]]]


def plot_report(rows: Sequence[DayRow], out_dir: Path) -> list[Chart]:
    """Write one PNG per metric that has at least one value; returns what each chart shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    charts = []
    namespaces = list(dict.fromkeys(row.ns for row in rows))
    for stem, attr, title, ylabel in METRICS:
        series = {
            ns: [(r.date, float(getattr(r, attr))) for r in rows if r.ns == ns and getattr(r, attr) is not None]
            for ns in namespaces
        }
        series = {ns: points for ns, points in series.items() if points}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        for ns, points in series.items():
            dates = [d for d, _ in points]
            ax.plot(dates, [v for _, v in points], marker="o", label=ns or "namespace")
            if stem in _BANDS:
                low, high = _BANDS[stem]
                band = [(r.date, getattr(r, low), getattr(r, high)) for r in rows if r.ns == ns and r.date in dates]
                ax.fill_between(
                    [d for d, _, _ in band], [lo for _, lo, _ in band], [hi for _, _, hi in band], alpha=0.2
                )
        if stem == "win_vs_base":
            ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
            ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("day")
        ax.tick_params(axis="x", rotation=45)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        fig.tight_layout()
        path = out_dir / f"{stem}.png"
        fig.savefig(path, metadata={"varro-series": json.dumps(series, sort_keys=True)})
        plt.close(fig)
        charts.append(Chart(path=path, metric=attr, series=series))
    return charts


def read_series(path: Path) -> dict[str, list[list[object]]]:
    """The series a chart written by `plot_report` says it draws."""
    from PIL import Image

    with Image.open(path) as image:
        text: dict[str, str] = getattr(image, "text", {})  # PNG text chunks (PIL's PngImageFile)
    series: dict[str, list[list[object]]] = json.loads(text["varro-series"])
    return series
