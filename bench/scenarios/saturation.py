"""Saturation: the highest push-by-mid rate this machine sustains with p99 <= 50 ms, mpim and Nchan.

The same users (one connection each, over WebSocket by default so that Nchan's
subscribers are the same clients) get pushes by mid at a rate stepped up from
``--start`` by ``--factor`` (or the ``--rates`` given) until a step fails: p99
from the publisher's write to the delivery above ``--p99-ms`` (50), or the
deliveries fall behind (not all delivered within 10 s of the last push, any
lost, duplicated, reordered or failed push), or the publishers could not offer
the rate (under 95 %). Each mpim ``--shards`` N (``[router] shards = N``) and,
with ``--peer nchan`` (the default), nginx + Nchan (one channel per user, a
request POSTs to it, same worker count) climb the same ladder. The pushes come
from ``--publishers`` generator processes so one publisher's core is not the
limit; the table shows the busiest publisher's share of a core, and a step the
publishers could not offer while one of them was above 90 % of a core is
marked as limited by the generator, not by the server. Prints every step, then
the last good rate per server and the mpim/Nchan ratio of those rates; the
busiest router process's share of a core says whether a router was the limit.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from bench.report import append, progress, table
from bench.scenarios.common import rates_list
from bench.scenarios.publishing import Load, Phase, drive
from bench.scenarios.shards import ROUTER, ints, sharded
from bench.servers import Missing, NchanServer, Server, nchan_missing

OFFERED_SHARE = 0.95  # a step is offered if the publishers reached this share of the rate
BUSY_PUBLISHER = 0.90  # a publisher above this share of a core is the likely limit


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(workers=[2])
    p.add_argument(
        "--shards", type=ints, default=[1], help="mpim [router] shards to run (1; 1,2 with shards)"
    )
    p.add_argument("--peer", choices=["none", "nchan"], default="nchan", help="also climb nginx + Nchan")
    p.add_argument("--conns", type=int, default=5000, help="users, one connection each")
    p.add_argument("--start", type=float, default=1000, help="first rate, push requests per second")
    p.add_argument("--factor", type=float, default=1.25, help="each step's rate over the previous one")
    p.add_argument("--max-rate", type=float, default=50_000, help="stop the ladder here")
    p.add_argument(
        "--rates", type=rates_list, default=[], help="the ladder itself (replaces --start/--factor)"
    )
    p.add_argument("--p99-ms", type=float, default=50.0, help="the latency bound: push -> delivery p99, ms")
    p.add_argument("--duration", type=float, default=10, help="seconds of publishing measured per step")
    p.add_argument("--transport", choices=["tcp", "ws"], default="ws", help="mpim's clients (Nchan: ws)")
    p.add_argument("--mids-per-push", type=int, default=1, help="mids named in one request")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--http-conns", type=int, default=32, help="keep-alive HTTP connections, all publishers")


def ladder(args: Any) -> list[float]:
    if args.rates:
        return list(args.rates)
    if args.factor <= 1 or args.start <= 0:
        raise ValueError("--factor must be above 1 and --start above 0")
    rates = []
    rate = args.start
    while rate <= args.max_rate:
        rates.append(float(round(rate, -2) if rate >= 1000 else round(rate)))
        rate *= args.factor
    return rates


def verdict(phase: Phase, p99_ms: float) -> str:
    """ "" when the step holds; else why not (the first reason found)."""
    if phase.rate < OFFERED_SHARE * phase.offered:
        who = "publishers" if phase.publisher_peak > BUSY_PUBLISHER else "server (answers)"
        return f"offered {phase.rate:,.0f}/s of {phase.offered:,.0f}: limited by the {who}"
    if phase.failed or phase.unanswered:
        return f"{phase.failed + phase.unanswered} pushes failed"
    if phase.received < phase.expected or phase.lost:
        return f"behind: {phase.received:,} of {phase.expected:,} delivered, {phase.lost} lost"
    if phase.dup or phase.reorder or phase.misdelivered or phase.closed:
        odd = (phase.dup, phase.reorder, phase.misdelivered, phase.closed)
        return "dup {}, reorder {}, misdelivered {}, closed {}".format(*odd)
    if 1000 * phase.p99 > p99_ms:
        return f"p99 {1000 * phase.p99:.1f} ms"
    return ""


@dataclass
class Climb:
    server: str  # "mpim N=1", "nchan"
    workers: int
    steps: list[tuple[Phase, str]] = field(default_factory=list)

    @property
    def last_good(self) -> float:
        good = [phase.offered for phase, why in self.steps if not why]
        return max(good) if good else 0.0

    @property
    def stopped(self) -> str:
        bad = [(phase.offered, why) for phase, why in self.steps if why]
        return f"{bad[0][0]:,.0f}/s: {bad[0][1]}" if bad else "not reached (end of the ladder)"


HEADER = (
    "server", "workers", "offered/s", "pushes/s", "delivered/s", "server CPU %", "deliveries / server CPU-s",
    "busiest router % of a core", "p50 ms", "p99 ms", "max ms", "lost", "publishers CPU %",
    "busiest publisher %", "clients CPU %", "load", "verdict",
)  # fmt: skip
SUMMARY_HEADER = ("server", "workers", "last good rate/s", "stopped at", "x Nchan")


def step_row(climb: Climb, phase: Phase, why: str) -> tuple[Any, ...]:
    cpu = phase.usage.cpu
    return (
        climb.server, climb.workers, phase.offered, phase.rate, phase.per_second,
        100 * cpu / phase.seconds, phase.received / cpu if cpu else float("nan"), busiest_router(phase),
        1000 * phase.p50, 1000 * phase.p99, 1000 * phase.max, phase.lost,
        100 * phase.publishers_cpu / phase.seconds, 100 * phase.publisher_peak,
        100 * phase.usage.client_cpu / phase.seconds, phase.load, why or "ok",
    )  # fmt: skip


def busiest_router(phase: Phase) -> float:
    """The busiest ``mpim: router*`` process's share of one core (NaN for Nchan: none)."""
    cpus = [cpu for name, cpu, _, _ in phase.usage.rows if ROUTER.match(name)]
    return 100 * max(cpus) / phase.seconds if cpus and phase.seconds else float("nan")


def report(climbs: list[Climb], args: Any) -> str:
    steps = [step_row(c, phase, why) for c in climbs for phase, why in c.steps]
    nchan = {c.workers: c.last_good for c in climbs if c.server == "nchan"}
    summary = [
        (
            c.server,
            c.workers,
            c.last_good,
            c.stopped,
            f"{c.last_good / nchan[c.workers]:.2f}" if nchan.get(c.workers) and c.server != "nchan" else "-",
        )
        for c in climbs
    ]
    return (
        table(HEADER, steps)
        + "\n\nThe highest rate each server held:\n\n"
        + table(SUMMARY_HEADER, summary)
        + f"\n\n{args.conns:,} users ({args.transport} for mpim, WebSocket for Nchan), one connection "
        f"each; pushes by mid naming {args.mids_per_push} mid(s) each; body {args.size} bytes; each step "
        f"{args.duration:g} s measured after a {args.warm_seconds:g} s warm-up, the rate times "
        f"{args.factor:g} per step. A step holds when p99 (publisher's write -> client's read) <= "
        f"{args.p99_ms:g} ms, every push was answered 2xx, everything was delivered once and in order "
        f"within 10 s of the last push, and the {args.publishers} publisher processes "
        f"({args.http_conns} keep-alive connections) offered at least {100 * OFFERED_SHARE:.0f}% of the rate."
    )


async def climb(args: Any, server: Server, kind: str, name: str, workers: int, rates: list[float]) -> Climb:
    progress(f"saturation: {name}, {workers} worker(s), {kind}")
    load = Load(args.conns, args.mids_per_push, args.size, args.publishers, args.http_conns)
    result = Climb(name, workers)

    def stop(phase: Phase) -> bool:
        why = verdict(phase, args.p99_ms)
        result.steps.append((phase, why))
        progress(f"  {phase.offered:,.0f}/s: p99 {1000 * phase.p99:.1f} ms, {why or 'ok'}")
        return bool(why)

    await drive(args, server, kind, load, rates, stop)
    return result


async def run(args: Any) -> str:
    if args.peer == "nchan":
        problem = nchan_missing()
        if problem:
            raise Missing(problem)
    rates = ladder(args)
    climbs = []
    for workers in args.workers:
        for shards in args.shards:
            server = sharded(args, workers, shards)
            climbs.append(await climb(args, server, args.transport, f"mpim N={shards}", workers, rates))
        if args.peer == "nchan":
            climbs.append(await climb(args, NchanServer(workers), "nchan", "nchan", workers, rates))
    return report(climbs, args)


def record(args: Any, text: str) -> None:
    append(f"Saturation: pushes by mid with p99 <= {args.p99_ms:g} ms, {args.conns:,} users", text)
