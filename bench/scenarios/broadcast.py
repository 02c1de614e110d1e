"""Scenario 4, broadcast: push to everyone, unpaced and paced by ``speed``; time to reach all.

Each broadcast is ``POST /goim/push/all?operation=1000&speed=S``. The runner
waits until every connection has it (or the count stops moving), then prints
the time from publish to the first and to the last connection, and the server
CPU it took. ``speed`` is goim's: connections per second (0 = unpaced).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.pusher import Pusher, post
from bench.report import append, progress, table
from bench.scenarios.common import Meter, connect, fleet_for, make_mpim, running
from bench.tally import merge_bcast
from bench.wire import BROADCAST, PUSH_OP, body


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conns", type=int, default=15_000)
    p.add_argument("--speeds", default="0,10000", help="comma-separated speeds; 0 = unpaced")
    p.add_argument("--repeat", type=int, default=3, help="broadcasts per speed")
    p.add_argument("--transport", choices=["tcp", "ws"], default="tcp")


async def reach(fleet: Any, seq: int, conns: int, timeout: float) -> list[float]:
    """[deliveries, first, last] for broadcast ``seq`` once all arrived or arrivals stopped."""
    deadline = time.monotonic() + timeout
    last_count, last_change = -1.0, time.monotonic()
    entry = [0.0, float("nan"), float("nan")]
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        entry = merge_bcast(await fleet.all({"cmd": "bcast"})).get(seq, entry)
        if entry[0] >= conns:
            break
        if entry[0] != last_count:
            last_count, last_change = entry[0], time.monotonic()
        elif time.monotonic() - last_change > 3.0:
            break
    return entry


async def case(args: Any, workers: int, speeds: list[int]) -> list[tuple[Any, ...]]:
    server = make_mpim(args, workers)
    rows = []
    async with running(server), fleet_for(args.conns, args.deadline, minimum=2) as fleet:
        port = server.tcp_port if args.transport == "tcp" else server.ws_port
        spec = {"kind": args.transport, "port": port, "rooms": 100, "mode": "room"}
        ok, failed, seconds = await connect(fleet, spec, args.conns)
        progress(f"  {ok:,} {args.transport} clients in {seconds:.1f}s ({failed} failed)")
        await asyncio.sleep(1.0)
        pusher = Pusher(server.http_port)
        await pusher.open()
        assert server.group is not None
        seq = 0
        for speed in speeds:
            for _ in range(args.repeat):
                meter = Meter(server.group, server.worker_pids())
                meter.start()
                sent = time.monotonic()
                pusher.send(
                    0,
                    post(
                        f"/goim/push/all?operation={PUSH_OP}&speed={speed}",
                        body(BROADCAST, seq, sent, args.size),
                    ),
                )
                timeout = 30.0 + (args.conns / speed if speed else 0.0)
                count, first, last = await reach(fleet, seq, ok, timeout)
                usage = meter.stop()
                progress(f"  speed {speed}: {int(count):,}/{ok:,} reached in {last - sent:.3f}s")
                rows.append(
                    (workers, args.transport, ok, speed, seq, int(count), 1000 * (first - sent),
                     1000 * (last - sent), count / max(last - sent, 1e-9), usage.cpu)
                )  # fmt: skip
                seq += 1
        await pusher.drain()
        pusher.close()
    return rows


HEADER = (
    "workers", "transport", "conns", "speed", "#", "reached", "first ms", "all reached ms",
    "deliveries/s", "server CPU-s",
)  # fmt: skip


async def run(args: Any) -> str:
    speeds = [int(s) for s in args.speeds.split(",") if s != ""]
    rows = []
    for workers in args.workers:
        progress(f"broadcast: {workers} worker(s), {args.conns:,} {args.transport} conns, speeds {speeds}")
        rows.extend(await case(args, workers, speeds))
    return table(HEADER, rows) + (
        "\n\n'all reached' is from the publish (HTTP request written) to the last connection's "
        "receive; server CPU-s is every mpim process from the publish until the count settled "
        "(includes up to 3 s of idle waiting when some connection never gets it)."
    )


def record(args: Any, text: str) -> None:
    append(f"Broadcast: {args.conns:,} connections, speeds {args.speeds}", text)
