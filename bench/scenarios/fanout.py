"""Scenario 2, room fan-out: R rooms x M members, room pushes over HTTP at a rate.

Prints messages delivered per second, deliveries per server CPU-second (all
server processes: mpim master, bus, router and workers; nginx master and
workers for Nchan), publish -> receive latency p50/p99/max and loss. With
``--peer nchan`` the same subscribers (WebSocket) and the same publish rate run
against nginx + Nchan, and the mpim/Nchan ratios are printed.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.report import append, progress, table
from bench.scenarios.common import make_mpim
from bench.scenarios.push import PushResult, RoomPlan, cpu_split, push_case, results_text, row
from bench.servers import NchanServer, Server


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conns", type=int, default=15_000, help="subscribers (one worker holds 18,000 at most)")
    p.add_argument("--rooms", type=int, default=750, help="rooms; members = conns / rooms")
    p.add_argument("--rate", type=float, default=1000, help="room pushes per second, over all rooms")
    p.add_argument("--duration", type=float, default=20, help="seconds of publishing measured")
    p.add_argument("--transport", choices=["tcp", "ws", "both"], default="tcp")
    p.add_argument("--peer", choices=["none", "nchan"], default="none", help="also run Nchan (WebSocket)")


async def case(args: Any, server: Server, kind: str, conns: int, rooms: int) -> PushResult:
    plan = RoomPlan(conns, rooms, args.size, nchan=isinstance(server, NchanServer))
    return await push_case(args, server, kind, conns, {"rooms": rooms, "mode": "room"}, plan)


async def run(args: Any) -> str:
    transports = ["tcp", "ws"] if args.transport == "both" else [args.transport]
    rows = []
    splits = []
    profiles: list[tuple[str, str]] = []
    mpim_ws: dict[int, PushResult] = {}
    for workers in args.workers:
        for kind in transports:
            progress(
                f"fan-out: mpim, {workers} worker(s), {kind}, {args.conns:,} conns in {args.rooms} rooms"
            )
            result = await case(args, make_mpim(args, workers), kind, args.conns, args.rooms)
            rows.append(row("mpim", workers, kind, args.conns, args.rooms, result))
            splits.append(f"mpim {workers}w {kind}: {cpu_split(result)}")
            if result.profile:
                profiles.append((f"mpim {workers}w {kind}", result.profile))
            if kind == "ws":
                mpim_ws[workers] = result
    ratios = []
    if args.peer == "nchan":
        for workers in args.workers:
            progress(f"fan-out: Nchan, {workers} worker(s), ws, {args.conns:,} conns in {args.rooms} rooms")
            result = await case(args, NchanServer(workers), "nchan", args.conns, args.rooms)
            rows.append(row("nchan", workers, "ws", args.conns, args.rooms, result))
            splits.append(f"nchan {workers}w: {cpu_split(result)}")
            if workers not in mpim_ws:
                progress(f"fan-out: mpim, {workers} worker(s), ws (for the ratio)")
                mine = await case(args, make_mpim(args, workers), "ws", args.conns, args.rooms)
                rows.append(row("mpim", workers, "ws", args.conns, args.rooms, mine))
                mpim_ws[workers] = mine
            mine = mpim_ws[workers]
            ratios.append(
                (
                    workers,
                    mine.per_cpu / result.per_cpu,
                    mine.p99 / result.p99 if result.p99 else float("nan"),
                )
            )
    text = results_text(rows, splits, profiles)
    if ratios:
        text += "\n\n" + table(
            ("workers", "mpim/Nchan deliveries per server CPU-s", "mpim/Nchan p99 latency"), ratios
        )
    text += (
        f"\n\nBody {args.size} bytes; `[room] batch = {args.batch}`, `batch_delay = {args.batch_delay}`; "
        f"{args.duration:g} s measured after a 1 s warm-up."
    )
    return text


def record(args: Any, text: str) -> None:
    append(
        f"Room fan-out: {args.conns:,} conns, {args.rooms} rooms, {args.rate:g} pushes/s",
        text,
    )
