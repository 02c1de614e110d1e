"""The p99-vs-rate curve of a push scenario as a PNG (matplotlib, the dev extra).

Top: p99 publish -> receive (log scale) against the offered rate, one line per
server and transport, the median of the repeats with their range as error bars.
Bottom: deliveries per server CPU-second. A point whose publisher fell behind
(achieved under 95 % of the offered rate) is drawn hollow and labelled with the
rate it reached: the server did not take the offered load.
"""

from __future__ import annotations

import importlib.util
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.scenarios.compare import Series

STYLE = {
    "mpim TCP": ("tab:blue", "o"),
    "mpim WebSocket": ("tab:green", "s"),
    "nchan WebSocket": ("tab:red", "^"),
}


def missing() -> str | None:
    """What to install for ``--plot``, or None."""
    if importlib.util.find_spec("matplotlib") is None:
        return "--plot needs matplotlib: pip install -e '.[dev]' (or pip install matplotlib)"
    return None


def _stats(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) of the finite values; NaNs when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, math.nan
    return statistics.median(finite), min(finite), max(finite)


def push_curve(path: Path, series: Sequence[Series], rates: Sequence[float], title: str) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8.5, 8.5), sharex=True, height_ratios=(3, 2))
    for s in series:
        label = s.label if len(s.runs) < 2 else f"{s.label} (median of {len(s.runs)}, range)"
        color, marker = STYLE.get(s.label, ("tab:gray", "x"))
        if len({x.workers for x in series}) > 1:
            label += f", {s.workers} workers"
        for axis, scale, metric in ((top, 1000.0, "p99"), (bottom, 1e-3, "per_cpu")):
            mid, lo, hi = [], [], []
            for j in range(len(rates)):
                m, a, b = _stats([getattr(r, metric) * scale for r in s.at(j)])
                mid.append(m)
                lo.append(m - a)
                hi.append(b - m)
            axis.errorbar(
                rates, mid, yerr=[lo, hi], color=color, marker=marker, capsize=3, label=label, linewidth=1.5
            )
            for j, rate in enumerate(rates):
                achieved = statistics.median(r.rate for r in s.at(j))
                if achieved < 0.95 * rate and math.isfinite(mid[j]):
                    axis.plot([rate], [mid[j]], marker=marker, color="white", markeredgecolor=color, ms=9)
                    if axis is top:
                        axis.annotate(
                            f"took {achieved:.0f}/s",
                            (rate, mid[j]),
                            textcoords="offset points",
                            xytext=(6, -12),
                            fontsize=8,
                            color=color,
                        )
    top.set_yscale("log")
    top.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    top.set_ylabel("p99 publish -> receive, ms (log)")
    top.grid(True, which="both", alpha=0.3)
    top.legend(fontsize=8)
    loads = [r.load for s in series for run in s.runs for r in run if math.isfinite(r.load)]
    if loads:
        title += f"\n1-minute load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs"
    top.set_title(title, fontsize=10)
    bottom.set_ylabel("deliveries per server CPU-s (thousands)")
    bottom.set_xlabel("offered room pushes/s")
    bottom.grid(True, alpha=0.3)
    bottom.set_ylim(bottom=0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
