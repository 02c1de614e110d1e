"""Every server, transport and rate of a push scenario, ``--repeat`` times, then the tables and the plot.

:func:`compare` runs each worker count x transport against mpim and, with
``--peer nchan``, against nginx + Nchan; with ``--repeat N`` the whole sequence
runs N times, interleaved (mpim, Nchan, mpim, Nchan...), so every repeat meets
the machine in about the same state for both servers. It prints every
measurement, then (when repeated) the median and range per server and rate,
the mpim/Nchan ratios (taken within each repeat, then summarised), and with
``--plot PATH`` draws the p99-vs-rate curve (:mod:`bench.plot`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import progress, table
from bench.scenarios.common import make_mpim
from bench.scenarios.push import PushResult, cpu_split, quotient, rate_label, rates_of, results_text, row
from bench.servers import Missing, NchanServer, Server, nchan_missing

# One server and transport ("tcp", "ws"; "nchan" for Nchan): a result per rate.
Case = Callable[[Server, str], Awaitable[list[PushResult]]]

SUMMARY_HEADER = (
    "server", "workers", "transport", "target pushes/s", "pushes/s", "deliveries / server CPU-s",
    "p50 ms", "p99 ms", "max ms", "msgs / write", "load",
)  # fmt: skip


@dataclass
class Series:
    """One server, worker count and transport: ``runs[i][j]`` is repeat i at rate j."""

    server: str
    workers: int
    transport: str
    runs: list[list[PushResult]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.server} {self.transport.upper() if self.transport == 'tcp' else 'WebSocket'}"

    def at(self, j: int) -> list[PushResult]:
        """Every repeat's result at rate j."""
        return [run[j] for run in self.runs]


def spread(values: Sequence[float], scale: float = 1.0, digits: str = ".3g") -> str:
    """``median (min-max)`` of the finite values (just the value when there is one), times ``scale``."""
    finite = sorted(v * scale for v in values if math.isfinite(v))
    if not finite:
        return "-"
    mid = statistics.median(finite)
    if len(finite) == 1 or finite[0] == finite[-1]:
        return _num(mid, digits)
    return f"{_num(mid, digits)} ({_num(finite[0], digits)}-{_num(finite[-1], digits)})"


def _num(value: float, digits: str) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else format(value, digits)


def summary(series: list[Series], rates: list[float]) -> str:
    rows = []
    for s in series:
        for j, rate in enumerate(rates):
            results = s.at(j)
            rows.append((
                s.server, s.workers, s.transport, rate_label(rate),
                spread([r.rate for r in results]),
                spread([r.per_cpu for r in results]),
                spread([r.p50 for r in results], 1000),
                spread([r.p99 for r in results], 1000),
                spread([r.max for r in results], 1000),
                spread([r.per_write for r in results]),
                spread([r.load for r in results], digits=".2f"),
            ))  # fmt: skip
    return table(SUMMARY_HEADER, rows)


def ratios(series: list[Series], rates: list[float]) -> str:
    """mpim/Nchan per worker count and rate: deliveries per server CPU-s and p99, per transport of mpim."""
    theirs = {s.workers: s for s in series if s.server == "nchan"}
    header: list[str] = ["workers", "target pushes/s"]
    mine = [s for s in series if s.server == "mpim" and s.workers in theirs]
    for s in mine:
        header += [f"{s.label} / Nchan deliveries per server CPU-s", f"{s.label} / Nchan p99"]
    rows = []
    for workers in sorted(theirs):
        for j, rate in enumerate(rates):
            cells: list[Any] = [workers, rate_label(rate)]
            for s in (m for m in mine if m.workers == workers):
                pairs = list(zip(s.at(j), theirs[workers].at(j), strict=False))
                cells.append(spread([quotient(a.per_cpu, b.per_cpu) for a, b in pairs]))
                cells.append(spread([quotient(a.p99, b.p99) for a, b in pairs]))
            rows.append(cells)
    return table(header, rows) if mine else ""


async def compare(args: Any, scenario: str, what: str, rooms: int | str, case: Case) -> str:
    """Every worker count x transport x rate on mpim; with ``--peer nchan`` also on Nchan, and the ratios.

    The ratios compare Nchan with mpim over each transport run (the same
    subscribers over WebSocket); an mpim WebSocket run is added when
    ``--transport`` did not include it.
    """
    if args.peer == "nchan":
        problem = nchan_missing()
        if problem:  # say so before the mpim runs, not after them
            raise Missing(problem)
    if args.plot:
        from bench.plot import missing as plot_missing

        problem = plot_missing()
        if problem:
            raise Missing(problem)
    transports = ["tcp", "ws"] if args.transport == "both" else [args.transport]
    if args.peer == "nchan" and "ws" not in transports:
        transports.append("ws")
    rates = rates_of(args)
    repeat = max(1, getattr(args, "repeat", 1))
    series: dict[tuple[str, int, str], Series] = {}
    rows: list[tuple[Any, ...]] = []
    splits: list[str] = []
    profiles: list[tuple[str, str]] = []

    async def one(run: int, server: Server, workers: int, kind: str) -> None:
        name = "nchan" if kind == "nchan" else "mpim"
        transport = "ws" if kind == "nchan" else kind
        again = f" (repeat {run} of {repeat})" if repeat > 1 else ""
        progress(f"{scenario}: {name}, {workers} worker(s), {transport}, {what}{again}")
        results = await case(server, kind)
        series.setdefault((name, workers, transport), Series(name, workers, transport)).runs.append(results)
        for rate, result in zip(rates, results, strict=True):
            rows.append((run, *row(name, workers, transport, args.conns, rooms, result)))
            label = f"{name} {workers}w {transport}" + (f" {rate:g}/s" if len(rates) > 1 else "")
            label += f" #{run}" if repeat > 1 else ""
            splits.append(f"{label}: {cpu_split(result)}")
            if result.profile:
                profiles.append((label, result.profile))

    for run in range(1, repeat + 1):
        for workers in args.workers:
            for kind in transports:
                await one(run, make_mpim(args, workers), workers, kind)
            if args.peer == "nchan":
                await one(run, NchanServer(workers), workers, "nchan")
    ordered = list(series.values())
    text = results_text(rows, splits, profiles, run_column=True)
    if repeat > 1:
        text += f"\n\nMedian (min-max) of the {repeat} repeats:\n\n" + summary(ordered, rates)
    ratio_text = ratios(ordered, rates)
    if ratio_text:
        within = f", median (min-max) over the {repeat} repeats" if repeat > 1 else ""
        text += f"\n\nmpim / Nchan, each ratio taken within one repeat{within}:\n\n{ratio_text}"
    if args.plot:
        from bench.plot import push_curve

        push_curve(Path(args.plot), ordered, rates, f"{scenario}: {what}")
        text += f"\n\nPlot: `{args.plot}`"
    return text
