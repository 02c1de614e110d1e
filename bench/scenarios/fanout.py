"""Scenario 2, room fan-out: R rooms x M members, room pushes over HTTP at a rate.

Prints messages delivered per second, deliveries per server CPU-second (all
server processes: mpim master, bus, router and workers; nginx master and
workers for Nchan), publish -> receive latency p50/p99/max and loss. With
``--peer nchan`` the same subscribers (WebSocket) and the same publish rate run
against nginx + Nchan, and the mpim/Nchan ratios are printed. ``--rates``
measures several rates, one after the other on the same connections.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.report import append
from bench.scenarios.common import room_text
from bench.scenarios.compare import compare
from bench.scenarios.push import PushResult, RoomPlan, add_push_arguments, push_case, rates_text
from bench.servers import NchanServer, Server


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_push_arguments(
        p, 15_000, "subscribers (one worker holds 18,000 at most)", 1000, "room pushes (over all rooms)"
    )
    p.add_argument("--rooms", type=int, default=750, help="rooms; members = conns / rooms")


async def case(args: Any, server: Server, kind: str, conns: int, rooms: int) -> list[PushResult]:
    plan = RoomPlan(conns, rooms, args.size, nchan=isinstance(server, NchanServer))
    return await push_case(args, server, kind, conns, {"rooms": rooms, "mode": "room"}, plan)


async def run(args: Any) -> str:
    text = await compare(
        args,
        "fan-out",
        f"{args.conns:,} conns in {args.rooms} rooms, {rates_text(args)} pushes/s",
        args.rooms,
        lambda server, kind: case(args, server, kind, args.conns, args.rooms),
    )
    return text + (
        f"\n\nBody {args.size} bytes; {room_text(args)}; "
        f"{args.duration:g} s measured after a {args.warm_seconds:g} s warm-up."
    )


def record(args: Any, text: str) -> None:
    append(
        f"Room fan-out: {args.conns:,} conns, {args.rooms} rooms, {rates_text(args)} pushes/s",
        text,
    )
