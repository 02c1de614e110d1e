"""Scenario 5, HTTP ingress: push requests per second the router's HTTP server answers.

Uses wrk (Debian package ``wrk``) when it is installed, else this package's own
pipelined HTTP publisher (:mod:`bench.pusher`), and says which. Requests are
goim's room push to a room with no members (``POST /goim/push/room?operation=
1000&type=live&room=empty``), so the figure is the ingress alone: HTTP parse,
route, publish on the bus. Prints requests/s and requests per CPU-second of the
router process (the one ingress process) and of all mpim processes.

``--rates 100,1000,4000`` adds what one request costs the router at paced
rates (the Python publisher, 4 keep-alive connections): router CPU per request
above its idle CPU, measured first. At low rates every request wakes the
router on its own, so this is the per-wake-up cost of the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
from typing import Any

from bench.pusher import Pusher, post
from bench.report import append, progress, table
from bench.scenarios.common import Meter, make_mpim, rates_list, running
from bench.servers import BENCH

PATH = "/goim/push/room?operation=1000&type=live&room=empty"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--connections", type=int, default=32, help="HTTP keep-alive connections")
    p.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument(
        "--rates",
        type=rates_list,
        default=[],
        help="also measure router CPU per request at these paced rates",
    )


async def with_wrk(port: int, args: Any) -> tuple[int, int]:
    """(requests, non-2xx or socket errors) from one wrk run."""
    wrk = shutil.which("wrk")
    assert wrk is not None
    proc = await asyncio.create_subprocess_exec(
        wrk, "-t1", f"-c{args.connections}", f"-d{args.duration:g}s", "-s", str(BENCH / "wrk_post.lua"),
        f"http://127.0.0.1:{port}{PATH}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ, BENCH_BODY_SIZE=str(args.size)),
    )  # fmt: skip
    out = (await proc.communicate())[0].decode(errors="replace")
    done = re.search(r"(\d+) requests in", out)
    errors = sum(
        int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|connect|read|write|timeout):? (\d+)", out)
    )
    if done is None:
        raise RuntimeError(f"wrk failed:\n{out}")
    return int(done.group(1)), errors


async def with_python(port: int, args: Any) -> tuple[int, int]:
    pusher = Pusher(port, connections=args.connections, window=16)
    await pusher.open()
    request = post(PATH, b"x" * args.size)
    counter = iter(range(1 << 62))
    await pusher.run_paced(lambda n, now: (next(counter), request), 0, args.duration)
    await pusher.drain()
    pusher.close()
    return pusher.ok, pusher.failed


async def paced(server: Any, rates: list[float], seconds: float, size: int) -> list[tuple[Any, ...]]:
    """(rate, router CPU %, router µs per request above idle) for each paced rate."""
    assert server.group is not None
    meter = Meter(server.group, server.worker_pids())
    meter.start()
    await asyncio.sleep(seconds)
    idle = meter.stop().cpu_of("router") / seconds
    pusher = Pusher(server.http_port)
    await pusher.open()
    request = post(PATH, b"x" * size)
    rows: list[tuple[Any, ...]] = [("idle", 100 * idle, float("nan"))]
    for rate in rates:
        progress(f"  paced {rate:g} requests/s for {seconds:g}s")
        meter.start()
        achieved = await pusher.run_paced(lambda n, now: (n, request), rate, seconds)
        await pusher.drain()
        usage = meter.stop()
        router = usage.cpu_of("router")
        requests = achieved * seconds
        rows.append(
            (achieved, 100 * router / usage.seconds, 1e6 * (router - idle * usage.seconds) / requests)
        )
    pusher.close()
    return rows


async def run(args: Any) -> str:
    tool = args.tool
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
        if tool == "python":
            progress("wrk not found (apt-get install wrk); using the Python publisher, which needs more CPU")
    rows = []
    sweep: list[tuple[Any, ...]] = []
    rates: list[float] = args.rates
    for workers in args.workers:
        server = make_mpim(args, workers)
        async with running(server):
            if rates and not sweep:
                sweep = await paced(server, rates, args.duration, args.size)
            assert server.group is not None
            meter = Meter(server.group, server.worker_pids())
            meter.start()
            progress(
                f"ingress: {workers} worker(s), {tool}, {args.connections} connections, {args.duration:g}s"
            )
            drive = with_wrk if tool == "wrk" else with_python
            requests, errors = await drive(server.http_port, args)
            usage = meter.stop()
            router = usage.cpu_of("router")
            rows.append(
                (workers, tool, args.connections, requests / usage.seconds, router / usage.seconds * 100,
                 requests / router if router else float("nan"), requests / usage.cpu, errors)
            )  # fmt: skip
    text = table(
        ("workers", "tool", "connections", "requests/s", "router CPU %", "requests / router CPU-s",
         "requests / all mpim CPU-s", "errors"),
        rows,
    ) + f"\n\n`POST {PATH}` with a {args.size}-byte body; one router process serves HTTP."  # fmt: skip
    if sweep:
        text += (
            f"\n\nRouter cost per request at paced rates ({args.workers[0]} worker(s), Python publisher, "
            "4 keep-alive connections):\n\n"
        )
        text += table(("requests/s", "router CPU %", "router µs / request above idle"), sweep)
    return text


def record(args: Any, text: str) -> None:
    append("HTTP ingress: room push requests/s", text)
