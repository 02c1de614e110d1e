"""Idle cost: server CPU with N idle connections and no pushes, as % of one core.

Starts mpim with its default configuration (only the ports, the log file and
``[server] workers`` are set: heartbeat 240 s, the default room batching and
timers; the common ``--batch`` options do not apply), measures the empty server
for ``--empty-seconds``, opens N authenticated connections (goim JSON token,
each in one of ``--rooms`` rooms), waits until the router has every session and
``--settle`` seconds more, then reads the CPU time of every server process
(master, bus, router, workers) over ``--seconds`` with no pushes. After auth
the clients send nothing unless ``--heartbeat S`` (one heartbeat per connection
every S seconds; the server's default interval is 240 s, so none is due within
a short run). Goal: under 2 % of a core with 10,000 idle connections.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench.report import append, progress, table
from bench.scenarios.common import (
    Meter,
    Usage,
    check_capacity,
    connect,
    fleet_for,
    make_mpim,
    running,
    wait_router_sessions,
)

HEADER = (
    "workers", "transport", "connections", "seconds", "server CPU % of a core", "empty server %",
    "workers %", "router %", "bus %", "master %", "generators %", "open at end",
)  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conns", type=int, default=10_000, help="idle connections")
    p.add_argument("--seconds", type=float, default=20, help="seconds measured with the connections open")
    p.add_argument(
        "--empty-seconds", type=float, default=5, help="seconds measured before connecting (0 = skip)"
    )
    p.add_argument("--settle", type=float, default=2, help="seconds between the last connect and measuring")
    p.add_argument("--transport", choices=["tcp", "ws", "both"], default="tcp")
    p.add_argument("--rooms", type=int, default=100, help="connection i joins room i %% rooms (0 = none)")
    p.add_argument("--heartbeat", type=float, default=0, help="heartbeat every S seconds per connection")


def percent(cpu: float, seconds: float) -> float:
    """CPU seconds over wall seconds as % of one core (NaN for an empty interval)."""
    return 100 * cpu / seconds if seconds > 0 else float("nan")


def idle_row(
    workers: int, kind: str, conns: int, held: Usage, empty: Usage | None, still_open: int
) -> tuple[Any, ...]:
    """One table row: the whole server's and each kind of process's CPU as % of a core."""
    s = held.seconds
    return (
        workers, kind, conns, s, percent(held.cpu, s),
        percent(empty.cpu, empty.seconds) if empty is not None else float("nan"),
        percent(held.cpu_of("worker"), s), percent(held.cpu_of("router"), s),
        percent(held.cpu_of("bus"), s), percent(held.cpu_of("master"), s),
        percent(held.client_cpu, s), still_open,
    )  # fmt: skip


def split(usage: Usage) -> str:
    """Each process's CPU as % of a core, with its share of system time."""
    return ", ".join(
        f"{name} {percent(cpu, usage.seconds):.2f}%"
        + (f" ({100 * system / cpu:.0f}% system)" if cpu > 0 else "")
        for name, cpu, system, _ in usage.rows
    )


async def hold(meter: Meter, seconds: float) -> Usage:
    meter.start()
    await asyncio.sleep(seconds)
    return meter.stop()


async def case(args: Any, workers: int, kind: str) -> tuple[tuple[Any, ...], str]:
    """(table row, per-process split) for one worker count and transport."""
    server = make_mpim(args, workers, overrides={})  # mpim's defaults
    check_capacity(server, args.conns)
    async with running(server), fleet_for(args.conns, args.deadline) as fleet:
        assert server.group is not None
        meter = Meter(server.group, server.worker_pids(), fleet.pids)
        empty = await hold(meter, args.empty_seconds) if args.empty_seconds > 0 else None
        port = server.tcp_port if kind == "tcp" else server.ws_port
        spec = {"kind": kind, "port": port, "path": "/sub", "rooms": args.rooms, "mode": "room"}
        ok, failed, seconds = await connect(fleet, spec, args.conns)
        progress(f"  {ok:,} {kind} connections in {seconds:.1f}s ({failed} failed)")
        if failed:
            raise RuntimeError(f"{failed} connections failed:\n{server.log_tail()}")
        await wait_router_sessions(server.http_port, ok)
        if args.heartbeat > 0:
            await fleet.all({"cmd": "heartbeat", "interval": args.heartbeat})
        await asyncio.sleep(args.settle)
        progress(f"  measuring {args.seconds:g}s idle")
        held = await hold(meter, args.seconds)
        still_open = sum(int(s["open"]) for s in await fleet.all({"cmd": "stats"}))
    return idle_row(workers, kind, ok, held, empty, still_open), split(held)


async def run(args: Any) -> str:
    kinds = ["tcp", "ws"] if args.transport == "both" else [args.transport]
    rows = []
    splits = []
    for workers in args.workers:
        for kind in kinds:
            progress(f"idle: {workers} worker(s), {kind}, {args.conns:,} connections")
            line, parts = await case(args, workers, kind)
            rows.append(line)
            splits.append(f"{workers}w {kind}: {parts}")
    beat = f"a heartbeat every {args.heartbeat:g} s" if args.heartbeat > 0 else "no heartbeats"
    return (
        table(HEADER, rows)
        + "\n\nServer CPU per process while idle (% of one core):\n\n"
        + "\n".join(f"- {s}" for s in splits)
        + (
            f"\n\nmpim's default configuration; CPU-seconds per second of all mpim processes (master, bus, "
            f"router, workers) over {args.seconds:g} s with the connections open and nothing pushed "
            f"({beat}), x 100; 'empty server' is the same over {args.empty_seconds:g} s before connecting. "
            "CPU time is read from /proc in 10 ms ticks. Goal: under 2 % with 10,000 idle connections."
        )
    )


def record(args: Any, text: str) -> None:
    append(f"Idle cost: {args.conns:,} idle connections", text)
