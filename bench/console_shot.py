"""A screenshot of the console under load, for the README: ``python -m bench.console_shot``.

Starts ``mpim master`` on loopback ports, connects ``--conns`` clients through the
load generators (half TCP, half WebSocket, spread over ``--rooms`` rooms), publishes
room pushes in three steps of rate (half, full and one and a half times ``--rate``)
and pushes by mid at ``--mid-rate``, adds a few things worth a warning (refused
tokens, one reader that stopped reading while pushes pile up for it), opens
``/console`` in headless Chromium and saves the page as a PNG (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.cdp import Browser
from bench.pusher import Pusher
from bench.report import progress
from bench.scenarios.common import connect, fleet_for, running, wait_router_sessions
from bench.scenarios.push import MidPlan, RoomPlan
from bench.servers import ROOT, MpimServer
from bench.wire import PUSH_OP, auth_frame
from mpim.proto import Op, encode


async def http_post(port: int, target: str, body: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (
            f"POST {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await reader.read()
    finally:
        writer.close()


async def trouble(server: MpimServer) -> list[asyncio.StreamWriter]:
    """Refused tokens, and a client that stops reading while pushes for it pile up (cut as slow)."""
    for _ in range(3):
        _, writer = await asyncio.open_connection("127.0.0.1", server.tcp_port)
        writer.write(encode(Op.AUTH, b"not a token", seq=1))
        await writer.drain()
        writer.close()
    reader, stalled = await asyncio.open_connection("127.0.0.1", server.tcp_port)
    stalled.write(auth_frame(99_999_999, ""))
    await stalled.drain()
    await reader.read(16)  # the Auth reply; nothing is read after it
    big = b"x" * 60_000
    for _ in range(20):
        await http_post(server.http_port, f"/goim/push/mids?operation={PUSH_OP}&mids=99999999", big)
    return [stalled]


async def publish(port: int, plan: Any, steps: list[tuple[float, float]]) -> None:
    pusher = Pusher(port, check_code=False)
    await pusher.open()
    try:
        for rate, seconds in steps:
            await pusher.run_paced(plan.request, rate, seconds)
        await pusher.drain()
    finally:
        pusher.close()


async def shoot(args: argparse.Namespace) -> None:
    overrides: dict[str, dict[str, Any]] = {
        "protocol": {"heartbeat": 600.0, "handshake_timeout": 60.0},
        "channel": {"max_pending_bytes": 262144, "high_water": 65536, "slow_timeout": 3.0},
        "tcp": {"sndbuf": 8192},
    }
    server = MpimServer(args.workers, overrides, ROOT)
    async with running(server), fleet_for(args.conns, args.deadline, minimum=2) as fleet:
        half = args.conns // 2
        spec = {"rooms": args.rooms, "mode": "room", "path": "/sub"}
        await connect(fleet, {**spec, "kind": "tcp", "port": server.tcp_port}, half)
        await fleet.connect({**spec, "kind": "ws", "port": server.ws_port}, args.conns - half, first=half)
        await wait_router_sessions(server.http_port, args.conns)
        progress(f"console_shot: {args.conns:,} clients in {args.rooms} rooms; console on {server.http_port}")
        browser = await Browser.launch()
        try:
            page = await browser.new_page(f"http://127.0.0.1:{server.http_port}/console", 1280, 900)
            step = args.seconds / 3
            steps = [(args.rate * 0.5, step), (args.rate, step), (args.rate * 1.5, step)]
            rooms = asyncio.create_task(
                publish(server.http_port, RoomPlan(args.conns, args.rooms, 32), steps)
            )
            mids = asyncio.create_task(
                publish(server.http_port, MidPlan(args.conns, 32), [(args.mid_rate, args.seconds)])
            )
            await asyncio.sleep(step / 2)
            held = await trouble(server)
            await asyncio.sleep(args.seconds - step / 2 - 1)
            await page.wait_for("document.getElementById('status').textContent === 'live'")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(args.out)
            progress(f"console_shot: wrote {args.out}")
            await asyncio.gather(rooms, mids)
            for writer in held:
                writer.close()
        finally:
            await browser.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.console_shot", description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "console.png")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--rooms", type=int, default=10)
    p.add_argument("--rate", type=float, default=40, help="room pushes per second (the middle step)")
    p.add_argument("--mid-rate", type=float, default=100, help="pushes by mid per second")
    p.add_argument("--seconds", type=float, default=60, help="seconds of load before the screenshot")
    p.add_argument("--deadline", type=float, default=600, help="generators exit after this long")
    args = p.parse_args(argv)
    started = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(shoot(args))
    progress(f"console_shot: done in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
