"""Scenario 1, capacity: hold N idle authenticated connections (TCP, then WebSocket).

Prints worker RSS per connection above the warmed-up empty server, the connect
rate (connections/s, auth included) and the server CPU the connect storm used.
Each connection authenticates with goim's JSON token and joins one of 100 rooms.
A worker holds at most ~18,000 sockets here (a process may open 20,000 files),
so a one-worker run caps N at 18,000.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.procs import rss_bytes
from bench.report import append, progress, table
from bench.scenarios.common import Meter, connect, fleet_for, make_mpim, running
from bench.servers import PER_WORKER, MpimServer

ROOMS = 100


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conns", type=int, default=30_000, help="idle connections (default 30,000)")
    p.add_argument("--transport", choices=["tcp", "ws", "both"], default="both")
    p.add_argument("--warmup", type=int, default=200, help="connections of each kind before 'before'")
    p.add_argument("--inflight", type=int, default=256, help="concurrent connects per generator")
    p.add_argument("--heartbeat", type=float, default=0, help="then heartbeat every S seconds per connection")
    p.add_argument("--hold", type=float, default=5, help="seconds to hold the connections after connecting")


async def settled_rss(pids: list[int], quiet: float = 1.0, limit: float = 20.0) -> int:
    """Sum of RSS once two readings ``quiet`` seconds apart agree within 64 KiB per process."""
    deadline = time.monotonic() + limit
    last = sum(rss_bytes(p) for p in pids)
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet)
        now = sum(rss_bytes(p) for p in pids)
        if abs(now - last) < 65536 * len(pids):
            return now
        last = now
    return last


async def case(args: Any, workers: int, kind: str) -> tuple[Any, ...]:
    conns = min(args.conns, PER_WORKER * workers)
    if conns < args.conns:
        progress(f"  {workers} worker(s) hold at most {conns:,} sockets here: using {conns:,}")
    server: MpimServer = make_mpim(args, workers)
    async with running(server), fleet_for(conns + 2 * args.warmup, args.deadline, minimum=2) as fleet:
        assert server.group is not None
        pids = server.worker_pids()
        empty = await settled_rss(pids)
        spec = {"rooms": ROOMS, "mode": "room", "inflight": args.inflight}
        for i, warm in enumerate(("tcp", "ws")):
            port = server.tcp_port if warm == "tcp" else server.ws_port
            await fleet.connect({**spec, "kind": warm, "port": port}, args.warmup, first=10_000_000 * (i + 1))
        before = await settled_rss(pids)
        meter = Meter(server.group, pids, fleet.pids)
        meter.start()
        port = server.tcp_port if kind == "tcp" else server.ws_port
        ok, failed, seconds = await connect(fleet, {**spec, "kind": kind, "port": port}, conns)
        usage = meter.stop()
        after = await settled_rss(pids)
        progress(f"  {ok:,} {kind} connections in {seconds:.1f}s ({failed} failed)")
        if failed:
            progress(server.log_tail())
        if args.heartbeat > 0:
            await fleet.all({"cmd": "heartbeat", "interval": args.heartbeat})
        await fleet.all({"cmd": "reset"})
        meter.start()
        await asyncio.sleep(args.hold)
        held = meter.stop()
        stats = await fleet.all({"cmd": "stats"})
        beats = sum(int(s["hb_replies"]) for s in stats) / held.seconds
        still_open = sum(int(s["open"]) for s in stats) - 2 * args.warmup
        return (
            workers, kind, ok, (after - before) / max(ok, 1), empty / 2**20, before / 2**20, after / 2**20,
            ok / seconds, usage.cpu, 1000 * usage.cpu / max(ok, 1), usage.client_cpu, failed,
            beats, 100 * held.cpu / held.seconds, still_open,
        )  # fmt: skip


HEADER = (
    "workers", "transport", "connections", "worker bytes / conn", "workers RSS empty MiB",
    "before MiB", "after MiB", "connects/s", "server CPU-s", "server CPU-ms / conn", "generators CPU-s",
    "failed", "heartbeat replies/s", "server CPU % holding", "open at end",
)  # fmt: skip


async def run(args: Any) -> str:
    kinds = ["tcp", "ws"] if args.transport == "both" else [args.transport]
    rows = []
    for workers in args.workers:
        for kind in kinds:
            progress(f"capacity: {workers} worker(s), {kind}")
            rows.append(await case(args, workers, kind))
    return table(HEADER, rows) + (
        f"\n\nRSS is the sum over the workers (VmRSS), settled; 'before' is after {args.warmup} TCP + "
        f"{args.warmup} WebSocket warm-up connections. Connect rate includes auth (JSON token) and "
        f"joining one of {ROOMS} rooms, {args.inflight} connects in flight per generator process; "
        "server CPU covers every mpim process (workers, router, bus, master). Then the connections are "
        f"held {args.hold:g} s"
        + (f", each sending a heartbeat every {args.heartbeat:g} s" if args.heartbeat > 0 else " idle")
        + ": heartbeat replies/s and the server's CPU while holding."
    )


def record(args: Any, text: str) -> None:
    append(f"Capacity: {args.conns:,} idle connections", text)
