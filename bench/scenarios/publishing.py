"""Pushes by mid from several publisher processes, measured phase by phase (shards, saturation).

The users are held by the client generators (:class:`bench.fleet.Fleet`, at most
15,000 sockets a process); the pushes come from a second fleet of generator
processes (``publish``, :mod:`bench.publisher`), each with its share of the rate,
of the users and of the keep-alive HTTP connections, so the publisher is not the
limit and, with ``SO_REUSEPORT`` router shards, the connections spread over the
shards. :func:`drive` starts a server, connects the users and measures one
phase per rate (each after its warm-up) until ``stop`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bench.fleet import Fleet
from bench.report import progress
from bench.scenarios.common import (
    Meter,
    Usage,
    check_capacity,
    connect,
    fleet_for,
    report_progress,
    running,
    wait_quiet,
    wait_router_sessions,
)
from bench.scenarios.push import MidPlan
from bench.servers import MpimServer, NchanServer, Server
from bench.tally import hist_max, merge_counts, merge_hist, percentile


@dataclass
class Load:
    """What the publishers send: ``rate`` requests/s naming ``per_push`` consecutive mids each."""

    users: int
    per_push: int
    size: int
    publishers: int  # processes
    conns: int  # keep-alive HTTP connections over all publishers
    tick: float = 0.002


@dataclass
class Phase:
    """One measured phase at one offered rate."""

    offered: float  # requests/s asked of the publishers
    rate: float  # requests/s they achieved
    pushes: int
    seconds: float
    received: int
    expected: int
    lost: int
    dup: int
    reorder: int
    misdelivered: int
    closed: int
    failed: int
    unanswered: int
    first_error: str
    p50: float
    p99: float
    max: float
    usage: Usage
    publishers_cpu: float  # CPU-seconds of all publisher processes over the phase
    publisher_peak: float  # the busiest publisher process's share of one core
    load: float
    sent: dict[str, int]  # pushes per stream since the publishers started (the next phase's baseline)

    @property
    def per_second(self) -> float:
        return self.received / self.seconds if self.seconds else float("nan")

    @property
    def clean(self) -> bool:
        """Every push answered 2xx and every delivery made once, in order."""
        return (
            self.failed == self.unanswered == self.lost == self.dup == self.reorder == 0
            and self.misdelivered == self.closed == 0
            and self.received == self.expected
        )


def merged_sent(replies: list[dict[str, Any]]) -> dict[str, int]:
    """The publishers' pushes per stream (each stream belongs to one publisher)."""
    sent: dict[str, int] = {}
    for reply in replies:
        for stream, count in reply["sent"].items():
            sent[stream] = sent.get(stream, 0) + int(count)
    return sent


def expected(plan: MidPlan, sent: dict[str, int]) -> int:
    return sum(count * plan.fanout.get(int(stream), 0) for stream, count in sent.items())


async def publish(
    pubs: Fleet, port: int, load: Load, nchan: bool, rate: float, seconds: float
) -> list[dict[str, Any]]:
    """Every publisher process publishes its share of ``rate`` for ``seconds``; their replies."""
    parts = len(pubs.gens)
    calls = []
    for part, gen in enumerate(pubs.gens):
        conns = load.conns // parts + (1 if part < load.conns % parts else 0)
        calls.append(
            gen.call(
                {
                    "cmd": "publish",
                    "port": port,
                    "users": load.users,
                    "per_push": load.per_push,
                    "size": load.size,
                    "nchan": nchan,
                    "part": part,
                    "parts": parts,
                    "conns": max(1, conns),
                    "rate": rate / parts,
                    "duration": seconds,
                    "tick": load.tick,
                }
            )
        )
    return list(await asyncio.gather(*calls))


async def measure(
    clients: Fleet,
    pubs: Fleet,
    meter: Meter,
    port: int,
    load: Load,
    nchan: bool,
    rate: float,
    duration: float,
    warmup: float,
    baseline: dict[str, int],
) -> Phase:
    """Warm up, reset the clients' counters, publish for ``duration`` at ``rate``, wait for the last
    deliveries (``baseline``: the pushes per stream before, the previous phase's ``sent``); the
    server's CPU per process over that phase and what the clients counted."""
    plan = MidPlan(load.users, load.size, load.per_push)  # the fan-out per stream, for the expected count
    if warmup > 0:
        await clients.all({"cmd": "reset"})
        replies = await publish(pubs, port, load, nchan, rate, warmup)
        warmed = merged_sent(replies)
        await wait_quiet(clients, expected(plan, warmed) - expected(plan, baseline))
        baseline = warmed
    await clients.all({"cmd": "reset"})
    load_avg = os.getloadavg()[0]
    meter.start()
    ticker = asyncio.create_task(report_progress(clients, meter, duration))
    try:
        replies = await publish(pubs, port, load, nchan, rate, duration)
        seconds = meter.now()[0]
        sent = merged_sent(replies)
        want = expected(plan, sent) - expected(plan, baseline)
        await wait_quiet(clients, want, timeout=10.0)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    usage = meter.stop()
    reports = await clients.all({"cmd": "finish", "sent": sent})
    hist = merge_hist(reports)
    errors = [r["first_error"] for r in replies if r["first_error"]]
    return Phase(
        offered=rate,
        rate=sum(float(r["rate"]) for r in replies),
        pushes=sum(int(r["pushes"]) for r in replies),
        seconds=seconds,
        received=merge_counts(reports, "recv"),
        expected=want,
        lost=merge_counts(reports, "lost"),
        dup=merge_counts(reports, "dup"),
        reorder=merge_counts(reports, "reorder"),
        misdelivered=merge_counts(reports, "misdelivered"),
        closed=merge_counts(reports, "closed"),
        failed=sum(int(r["failed"]) for r in replies),
        unanswered=sum(int(r["unanswered"]) for r in replies),
        first_error=errors[0] if errors else "",
        p50=percentile(hist, 0.50),
        p99=percentile(hist, 0.99),
        max=hist_max(hist),
        usage=usage,
        publishers_cpu=sum(float(r["cpu"]) for r in replies),
        publisher_peak=max(float(r["cpu"]) for r in replies) / max(seconds, 1e-9),
        load=load_avg,
        sent=sent,
    )


@contextlib.asynccontextmanager
async def publishers(count: int, deadline: float) -> AsyncIterator[Fleet]:
    fleet = await Fleet.start(count, deadline)
    try:
        yield fleet
    finally:
        await fleet.stop()


async def drive(
    args: Any,
    server: Server,
    kind: str,
    load: Load,
    rates: Iterable[float],
    stop: Callable[[Phase], bool] = lambda phase: False,
) -> list[Phase]:
    """Start ``server``, connect ``load.users`` clients of ``kind`` ("tcp", "ws"; "nchan" for
    Nchan), then one phase per rate, in order, until ``stop`` is true of a phase (that phase is
    returned too). ``args``: ``duration``, ``warm_seconds``, ``deadline``."""
    check_capacity(server, load.users)
    phases: list[Phase] = []
    async with (
        running(server),
        fleet_for(load.users, args.deadline, minimum=2) as clients,
        publishers(load.publishers, args.deadline) as pubs,
    ):
        if isinstance(server, NchanServer):
            client_port = http = server.port
        else:
            assert isinstance(server, MpimServer)
            client_port = server.tcp_port if kind == "tcp" else server.ws_port
            http = server.http_port
        spec = {"rooms": 0, "mode": "mid", "group": load.per_push, "kind": kind, "port": client_port}
        ok, failed, seconds = await connect(clients, {**spec, "path": "/sub"}, load.users)
        progress(f"  {ok:,} {kind} clients in {seconds:.1f}s ({failed} failed)")
        if failed:
            raise RuntimeError(f"{failed} connections failed:\n{server.log_tail()}")
        if isinstance(server, MpimServer):
            await wait_router_sessions(http, load.users)
        await asyncio.sleep(0.3)
        assert server.group is not None
        meter = Meter(server.group, server.worker_pids(), clients.pids)
        sent: dict[str, int] = {}
        for rate in rates:
            progress(f"  {rate:,.0f} requests/s")
            phase = await measure(
                clients, pubs, meter, http, load, isinstance(server, NchanServer), rate, args.duration,
                args.warm_seconds, sent,
            )  # fmt: skip
            sent = phase.sent
            if phase.failed or phase.unanswered:
                progress(
                    f"  warning: {phase.failed + phase.unanswered} pushes failed, first: {phase.first_error}"
                )
            phases.append(phase)
            if stop(phase):
                break
    return phases
