"""Flood: one address opens thousands of unauthenticated connections and sends garbage while good
clients in a room receive pushes; their p99 latency and loss with the per-IP limits on and off.

The good clients (``--conns``, 1,000 by default, in one room) connect from
127.0.1.x, a network the run's ``[limits] exempt`` covers (they stand for many
distinct addresses, each far under the limits). The flooder (``bench.flooder``)
connects from one address, 127.66.0.1, which is not exempt, and keeps up to
``--flood-conns`` connections open at once on the TCP and WebSocket ports,
holding them silent, sending random bytes or a frame that never ends, and
reopening each as soon as it is closed. For each limits setting the same room
pushes (``--rate`` per second) are measured twice on the same connections:
without the flood, then during it. ``--limits on`` uses the shipped defaults
(1,000 connections per IP per worker, 50 new per second, burst 200); ``off``
sets them to 0 (goim's behaviour). The goim handshake timeout is goim's 8 s.

At the end of the flood phase, while the flood goes on, ``--newcomers`` new good
clients try to connect and authenticate: with ``--max-connections`` (the
workers' ``[server] max_connections``) small enough for one flooder to fill, it
shows whether an attacker can take the connection budget away from everyone
else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from bench.fleet import Fleet
from bench.report import append, progress, table
from bench.scenarios.common import (
    Meter,
    connect,
    fleet_for,
    http_get_json,
    make_mpim,
    room_overrides,
    running,
    wait_router_sessions,
)
from bench.scenarios.push import PushResult, RoomPlan, cpu_split, measure
from bench.servers import MpimServer

FLOOD_SOURCE = "127.66.0.1"
GOOD_NETWORK = "127.0.1.0/24"
LIMIT_STATS = ("limit_conns", "limit_rate", "limit_banned", "bad_input", "refused", "connections")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conns", type=int, default=1000, help="good clients, all in one room")
    p.add_argument("--rate", type=float, default=100, help="room pushes per second")
    p.add_argument("--duration", type=float, default=20, help="seconds measured, each phase")
    p.add_argument("--transport", choices=["tcp", "ws"], default="tcp", help="of the good clients")
    p.add_argument("--flood-conns", type=int, default=3000, help="connections the flooder keeps at once")
    p.add_argument("--flood-rate", type=float, default=0.0, help="flood attempts/s at most (0 = unpaced)")
    p.add_argument(
        "--flood-mix", default="hold,garbage,trickle", help="what flood connections do, taking turns"
    )
    p.add_argument("--limits", choices=["on", "off", "both"], default="both", help="per-IP limits")
    p.add_argument("--newcomers", type=int, default=200, help="good clients connecting during the flood")
    p.add_argument(
        "--max-connections", type=int, default=0, help="[server] max_connections per worker (0 = default)"
    )


def overrides(args: Any, limits: bool) -> dict[str, dict[str, Any]]:
    off = {"conns_per_ip": 0, "rate_per_ip": 0.0, "auth_failures": 0}
    return {
        "server": {"max_connections": args.max_connections},
        "router": {"online_interval": 0.5},  # fresh worker counters on /mpim/workers
        "protocol": {"heartbeat": 600.0, "handshake_timeout": 8.0},
        "room": room_overrides(args),
        "limits": {"exempt": [GOOD_NETWORK], **({} if limits else off)},
    }


async def worker_counters(http_port: int) -> dict[str, int]:
    rows = await http_get_json(http_port, "/mpim/workers")
    totals = dict.fromkeys(LIMIT_STATS, 0)
    for row in rows:
        for name in LIMIT_STATS:
            totals[name] += int((row.get("stats") or {}).get(name, 0))
    return totals


async def start_flooder(args: Any, server: MpimServer, seconds: float) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.flooder", "--source", FLOOD_SOURCE,
        "--ports", f"{server.tcp_port},{server.ws_port}", "--conns", str(args.flood_conns),
        "--rate", str(args.flood_rate), "--seconds", str(seconds), "--mix", args.flood_mix,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def stop_flooder(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    await proc.wait()
    result: dict[str, Any] = json.loads(line) if line else {}
    return result


def good_sources(fleet: Fleet) -> None:
    """The good clients' generators connect from the exempt network."""
    for i, gen in enumerate(fleet.gens):
        gen.source = f"127.0.1.{i + 1}"


async def one_setting(args: Any, workers: int, limits: bool) -> tuple[list[tuple[Any, ...]], list[str]]:
    server = make_mpim(args, workers, overrides(args, limits))
    label = f"{workers}w limits {'on' if limits else 'off'}"
    rows: list[tuple[Any, ...]] = []
    splits: list[str] = []
    async with running(server), fleet_for(args.conns, args.deadline, minimum=2) as fleet:
        good_sources(fleet)
        port = server.tcp_port if args.transport == "tcp" else server.ws_port
        spec = {"rooms": 1, "mode": "room", "kind": args.transport, "port": port, "path": "/sub"}
        ok, failed, seconds = await connect(fleet, spec, args.conns)
        progress(f"flood, {label}: {ok:,} good {args.transport} clients in {seconds:.1f}s ({failed} failed)")
        if failed:
            raise RuntimeError(f"{failed} good connections failed:\n{server.log_tail()}")
        await wait_router_sessions(server.http_port, args.conns)
        await asyncio.sleep(0.3)
        assert server.group is not None
        meter = Meter(server.group, server.worker_pids(), fleet.pids)
        plan = RoomPlan(args.conns, 1, args.size)
        progress("  no flood")
        calm = await measure(
            fleet, meter, server.http_port, plan, args.rate, args.duration, args.warm_seconds
        )
        before = await worker_counters(server.http_port)
        flood_seconds = args.warm_seconds + args.duration + 30
        flooder = await start_flooder(args, server, flood_seconds)
        progress(f"  flood from {FLOOD_SOURCE}: up to {args.flood_conns:,} connections at once")
        await asyncio.sleep(2.0)  # the flood ramps up before the warm-up
        meter.clients.append(flooder.pid)
        stormy = await measure(
            fleet, meter, server.http_port, plan, args.rate, args.duration, args.warm_seconds
        )
        meter.clients.remove(flooder.pid)
        held = (await worker_counters(server.http_port))["connections"] - args.conns
        replies = await fleet.connect(spec, args.newcomers, first=args.conns) if args.newcomers else []
        joined = sum(int(r["ok"]) for r in replies)
        flood = await stop_flooder(flooder)
        flood["newcomers"], flood["newcomers_tried"], flood["held"] = joined, args.newcomers, held
        await asyncio.sleep(1.0)  # the workers' counters reach the router every 0.5 s
        after = await worker_counters(server.http_port)
    refused = {k: after[k] - before[k] for k in LIMIT_STATS}
    for phase, result, stats in (("no flood", calm, None), ("flood", stormy, flood)):
        rows.append(row(workers, limits, phase, result, stats, refused if stats else None))
        splits.append(f"{label}, {phase}: {cpu_split(result)}")
    return rows, splits


HEADER = (
    "workers", "limits", "phase", "good conns", "pushes/s", "p50 ms", "p99 ms", "max ms", "lost",
    "good closed", "server CPU %", "flood attempts/s",
    "flood conns held by workers", "refused by limits", "refused at max_connections", "bad input closes",
    "newcomers served",
)  # fmt: skip


def row(
    workers: int,
    limits: bool,
    phase: str,
    r: PushResult,
    flood: dict[str, Any] | None,
    refused: dict[str, int] | None,
) -> tuple[Any, ...]:
    return (
        workers, "on" if limits else "off", phase, r.expected // max(1, r.pushes), r.rate,
        1000 * r.p50, 1000 * r.p99, 1000 * r.max, r.lost, r.closed, 100 * r.usage.cpu / r.seconds,
        flood["attempts_per_s"] if flood else "-",
        flood["held"] if flood else "-",
        (refused["limit_conns"] + refused["limit_rate"] + refused["limit_banned"]) if refused else "-",
        refused["refused"] if refused else "-",
        refused["bad_input"] if refused else "-",
        f"{flood['newcomers']} of {flood['newcomers_tried']}" if flood else "-",
    )  # fmt: skip


async def run(args: Any) -> str:
    settings = {"on": [True], "off": [False], "both": [True, False]}[args.limits]
    rows: list[tuple[Any, ...]] = []
    splits: list[str] = []
    for workers in args.workers:
        for limits in settings:
            more_rows, more_splits = await one_setting(args, workers, limits)
            rows += more_rows
            splits += more_splits
    text = table(HEADER, rows)
    text += "\n\nServer CPU seconds per process during each measured phase:\n\n"
    text += "\n".join(f"- {s}" for s in splits)
    return text + (
        f"\n\nGood clients: {args.conns:,} {args.transport} in one room from {GOOD_NETWORK} (exempt), "
        f"{args.rate:g} room pushes/s of {args.size} bytes, {args.duration:g} s measured per phase. "
        f"Flood: one address ({FLOOD_SOURCE}) keeping up to {args.flood_conns:,} unauthenticated "
        f"connections at once on the TCP and WebSocket ports ({args.flood_mix}), "
        f"{'unpaced' if not args.flood_rate else f'at most {args.flood_rate:g} attempts/s'}. "
        f"{args.newcomers} good newcomers connect near the end of the flood"
        + (f"; `[server] max_connections = {args.max_connections}`" if args.max_connections else "")
        + ". The flooder, the load generators and the publisher share the machine's cores with the server."
    )


def record(args: Any, text: str) -> None:
    append(f"Flood: {args.conns:,} good clients, one flooding address, limits {args.limits}", text)
