"""The repeated side-by-side summary (median and range, ratios within a repeat) and the plot."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.__main__ import parser
from bench.plot import missing, push_curve
from bench.scenarios.common import Usage, room_overrides, room_text
from bench.scenarios.compare import Series, ratios, spread, summary
from bench.scenarios.push import PushResult


def result(rate: float, per_cpu: float, p99: float, per_write: float = math.nan) -> PushResult:
    received = int(rate * 1000)
    usage = Usage(seconds=1.0, cpu=received / per_cpu, worker_cpu=0.0, rows=[])
    return PushResult(
        pushes=int(rate), rate=rate, seconds=1.0, received=received, expected=received, lost=0, dup=0,
        reorder=0, misdelivered=0, closed=0, failed_pushes=0, first_error="", p50=p99 / 2, p99=p99,
        max=p99 * 2, usage=usage, load=1.5, per_write=per_write,
    )  # fmt: skip


def series() -> list[Series]:
    mpim = Series("mpim", 2, "ws")
    mpim.runs = [
        [result(20, 100e3, 0.010, 1.0), result(300, 400e3, 0.100, 4.0)],
        [result(20, 120e3, 0.020, 1.0), result(300, 300e3, 0.300, 3.0)],
    ]
    nchan = Series("nchan", 2, "ws")
    nchan.runs = [
        [result(20, 100e3, 0.010), result(150, 150e3, 2.0)],
        [result(20, 100e3, 0.010), result(140, 150e3, 3.0)],
    ]
    return [mpim, nchan]


def test_spread_is_median_and_range_of_finite_values() -> None:
    assert spread([3.0, 1.0, 2.0]) == "2 (1-3)"
    assert spread([0.01, 0.02], 1000) == "15 (10-20)"
    assert spread([5.0, 5.0]) == "5" and spread([float("nan")]) == "-" and spread([]) == "-"
    assert spread([1234.0, 2000.0, float("nan")]) == "1,617 (1,234-2,000)"


def test_summary_and_ratios_within_each_repeat() -> None:
    text = summary(series(), [20, 300])
    assert "| mpim   | 2       | ws        | 300" in text and "110,000 (100,000-120,000)" in text
    assert "200 (100-300)" in text  # p99 ms
    ratio = ratios(series(), [20, 300])
    header, _, first, second = ratio.splitlines()
    assert "mpim WebSocket / Nchan deliveries per server CPU-s" in header
    assert "1.1 (1-1.2)" in first  # 100/100 and 120/100
    assert "2.33 (2-2.67)" in second and "0.075 (0.05-0.1)" in second  # 400/150, 300/150; 0.1/2, 0.3/3
    assert ratios([series()[0]], [20, 300]) == ""  # no Nchan run: no ratios


def test_room_options_override_only_what_is_given() -> None:
    args = parser().parse_args(["fanout"])
    assert room_overrides(args) == {} and room_text(args) == "mpim's default `[room]`"
    args = parser().parse_args(["fanout", "--room-mode", "fixed", "--batch-delay", "1"])
    assert room_overrides(args) == {"mode": "fixed", "batch_delay": 1.0}
    assert room_text(args) == "`[room]` mode = 'fixed', batch_delay = 1.0, the rest mpim's defaults"
    args = parser().parse_args(["fanout", "--repeat", "3", "--plot", "x.png"])
    assert (args.repeat, args.plot) == (3, "x.png")


@pytest.mark.skipif(missing() is not None, reason="needs matplotlib (the dev extra)")
def test_plot_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "docs" / "curve.png"
    push_curve(path, series(), [20, 300], "fan-out: test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
