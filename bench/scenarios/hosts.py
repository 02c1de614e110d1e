"""Scenario 7, hosts: pushes across two hosts sharing one Redis, beside one host, in one run.

Two-host setup (bench/cluster.py): a redis-server of the run's own (no persistence)
and two ``mpim master`` processes, ``host-a`` and ``host-b``, ``--host-workers``
worker(s) each, on their own ports with ``[cluster] redis`` pointing at it. Every
push goes to host A's HTTP API. Baseline: one plain ``mpim master`` with
``--workers`` workers (2) and no Redis, the same subscribers and rates.

- **unicast** (``--conns`` users, one TCP connection each, ``--rates`` requests/s):
  ``POST /goim/push/mids`` to one random user per request. Two-host cases: every
  user on host B (each push crosses from A to B: Redis inbox append, directory
  lookup, pub/sub to B), then the users split over A and B (about half the pushes
  local, half remote). One-host case: all users on the one master.
- **rooms** (``--room-conns`` connections in ``--rooms`` rooms, ``--room-rates``
  room pushes/s over all rooms): ``POST /goim/push/room`` round-robin. Two hosts:
  the first half of the connections on A, the rest on B, so every room has
  members on both (each host takes every room push from the room's Redis channel).

Server CPU is the CPU of every process of the setup over the measured phase: both
masters' trees (master, router, bus, workers) and redis-server for two hosts, the
one master's tree for one host. Also printed: Redis CPU per 1,000 pushes (as
measured, and above what Redis used in a ``--idle-seconds`` phase with the same
connections and no pushes), Redis's ``INFO commandstats`` per push, the ratios two
hosts / one host, and every process's CPU. Bodies are stamped and deliveries
accounted as in fan-out and unicast (bench/scenarios/push.py); ``lost`` counts from
the first warm-up push, so pushes refused in a warm-up are shown too ("+N in
warm-up" beside the failed pushes).
"""

from __future__ import annotations

import argparse
import asyncio
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cluster import TwoHosts, redis_missing
from bench.fleet import Fleet
from bench.pusher import Pusher
from bench.report import append, progress, table
from bench.scenarios.common import (
    Meter,
    Usage,
    fleet_for,
    mpim_overrides,
    rates_list,
    room_text,
    running,
    wait_quiet,
)
from bench.scenarios.push import MidPlan, Plan, PushResult, RoomPlan, cpu_split, measure, push_case, quotient
from bench.servers import PER_WORKER, ROOT, Missing, MpimServer

ALL = "all, one host"
ON_B = "all on B"
SPLIT = "half A, half B"


@dataclass
class Case:
    """One measured rate of one setup."""

    part: str  # "unicast" or "rooms"
    setup: str  # "one host" or "two hosts"
    workers: str  # "2" or "1 + 1"
    subscribers: str  # ALL, ON_B or SPLIT
    conns: int
    rooms: int | str
    target: float
    result: PushResult
    idle: Usage | None = None  # the same setup and connections before any push (two hosts)
    commands: dict[str, tuple[float, float]] | None = None  # Redis: command -> (calls, µs) per push
    warm_failed: int = 0  # pushes refused during this rate's warm-up (two hosts)

    def redis_ms(self, above_idle: bool = False) -> float:
        """Redis CPU milliseconds per 1,000 pushes (NaN without Redis); ``above_idle``: less
        what Redis used in as much time with no pushes."""
        if self.setup == "one host" or not self.result.pushes:
            return math.nan
        usage = self.result.usage
        cpu = usage.cpu_of("redis")
        if above_idle:
            if self.idle is None or not self.idle.seconds:
                return math.nan
            cpu -= self.idle.cpu_of("redis") * usage.seconds / self.idle.seconds
        return 1e6 * cpu / self.result.pushes


def parts_list(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or any(p not in ("unicast", "rooms") for p in parts):
        raise argparse.ArgumentTypeError("a comma-separated list of unicast, rooms")
    return parts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(workers=[2])
    p.add_argument("--conns", type=int, default=4000, help="unicast: users, one connection each")
    p.add_argument("--rates", type=rates_list, default=[300.0, 1000.0], help="unicast: requests/s (300,1000)")
    p.add_argument("--room-conns", type=int, default=10_000, help="rooms: connections")
    p.add_argument("--rooms", type=int, default=10, help="rooms: rooms (members = room-conns / rooms)")
    p.add_argument(
        "--room-rates", type=rates_list, default=[20.0, 76.0], help="rooms: room pushes/s over all rooms"
    )
    p.add_argument("--duration", type=float, default=10, help="seconds of publishing measured (each rate)")
    p.add_argument("--transport", choices=["tcp", "ws"], default="tcp")
    p.add_argument("--host-workers", type=int, default=1, help="[server] workers of each of the two hosts")
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=5.0,
        help="two hosts: CPU measured with the connections up and no pushes, before the first rate",
    )
    p.add_argument("--parts", type=parts_list, default=["unicast", "rooms"], help="unicast,rooms")


def root_of(args: Any) -> Path:
    return Path(args.server_root).resolve() if args.server_root else ROOT


def one_host(args: Any, workers: int) -> MpimServer:
    return MpimServer(workers, mpim_overrides(args), root_of(args))


def two_hosts(args: Any) -> TwoHosts:
    return TwoHosts(args.host_workers, mpim_overrides(args), root_of(args))


def with_rates(args: Any, rates: list[float]) -> Any:
    """A copy of ``args`` for :func:`push_case` (one host): these rates, no profile (the
    process names of ``--profile`` are the two hosts')."""
    return argparse.Namespace(**{**vars(args), "rates": rates, "rate": rates[0], "profile": ""})


def placement(subscribers: str, conns: int) -> list[tuple[str, int, int]]:
    """(host label, first connection index, count) for each host with subscribers."""
    if subscribers == ON_B:
        return [("B", 0, conns)]
    half = conns // 2
    return [("A", 0, half), ("B", half, conns - half)]


def warn(result: PushResult) -> None:
    if result.failed_pushes:
        progress(f"  warning: {result.failed_pushes} pushes failed, first: {result.first_error}")
    if result.closed:
        progress(f"  warning: {result.closed} client connections were closed during the run")


async def across(
    args: Any,
    hosts: TwoHosts,
    subscribers: str,
    conns: int,
    spec: dict[str, Any],
    plan: Plan,
    rates: list[float],
) -> tuple[list[tuple[PushResult, dict[str, tuple[float, float]], int]], Usage | None]:
    """Connect ``conns`` clients to the hosts as ``subscribers`` says, measure the idle CPU
    (``--idle-seconds``), push ``plan`` through host A at each rate; the connections close
    afterwards (and leave the directory). Returns, per rate, the result, Redis's commands
    per push (calls and microseconds, warm-up included) and the pushes refused in the
    warm-up; and the idle usage."""
    places = placement(subscribers, conns)
    most = max(count for _, _, count in places)
    if most > PER_WORKER * hosts.host_workers:
        raise ValueError(
            f"{most:,} connections on one host need more than {hosts.host_workers} worker(s) "
            f"(~{PER_WORKER:,} sockets a process here; --host-workers)"
        )
    kind = args.transport
    results = []
    async with fleet_for(conns, args.deadline, minimum=2) as fleet:
        for label, first, count in places:
            host = hosts.hosts[label]
            port = host.tcp_port if kind == "tcp" else host.ws_port
            replies = await fleet.connect({**spec, "kind": kind, "port": port, "path": "/sub"}, count, first)
            ok = sum(r["ok"] for r in replies)
            failed = sum(r["failed"] for r in replies)
            progress(f"  {ok:,} {kind} clients on host {label} ({failed} failed)")
            if failed:
                raise RuntimeError(f"{failed} connections failed:\n{hosts.log_tail()}")
        await hosts.wait_filed({label: count for label, _, count in places})  # findable from A
        await asyncio.sleep(0.3)  # and room channels subscribed on both hosts
        assert hosts.group is not None
        meter = Meter(hosts.group, hosts.worker_pids(), fleet.pids)
        idle = None
        if args.idle_seconds > 0:
            progress(f"  idle {args.idle_seconds:g}s")
            meter.start()
            await asyncio.sleep(args.idle_seconds)
            idle = meter.stop()
        for rate in rates:
            progress(f"  {rate:g}/s")
            stats = await hosts.command_stats()
            pushed = sum(plan.sent.values())
            outages = hosts.log_count("Redis lost")
            warm = await warm_up(fleet, hosts.a.http_port, plan, rate, args.warm_seconds)
            result = await measure(
                fleet, meter, hosts.a.http_port, plan, rate, args.duration, 0, args.profile, args.native
            )
            warn(result)
            outages = hosts.log_count("Redis lost") - outages
            if outages:
                progress(f"  warning: host A logged 'Redis lost' {outages} time(s) (see the failed pushes)")
            commands = per_push(stats, await hosts.command_stats(), sum(plan.sent.values()) - pushed)
            results.append((result, commands, warm))
    await hosts.wait_filed({})  # every connection gone: the next case starts from an empty directory
    return results, idle


async def warm_up(fleet: Fleet, port: int, plan: Plan, rate: float, seconds: float) -> int:
    """Publish ``plan`` at ``rate`` for ``seconds`` and wait for its deliveries; returns how
    many pushes were refused. (What :func:`measure` does before measuring, but counting
    the refusals: a push refused there is lost for its client, and ``lost`` counts it.)"""
    if seconds <= 0:
        return 0
    before = plan.expected()
    received = sum(int(s["recv"]) for s in await fleet.all({"cmd": "stats"}))
    pusher = Pusher(port, check_code=plan.check_code)
    await pusher.open()
    try:
        await pusher.run_paced(plan.request, rate, seconds)
        await pusher.drain()
    finally:
        pusher.close()
    await wait_quiet(fleet, received + plan.expected() - before)
    if pusher.failed:
        progress(f"  warning: {pusher.failed} pushes failed in the warm-up, first: {pusher.first_error}")
    return pusher.failed


def per_push(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], pushes: int
) -> dict[str, tuple[float, float]]:
    """Redis command -> (calls, microseconds) per push between two ``INFO commandstats``."""
    out = {}
    for name, (calls, usec) in after.items():
        calls0, usec0 = before.get(name, (0, 0))
        if calls > calls0 and pushes:
            out[name] = ((calls - calls0) / pushes, (usec - usec0) / pushes)
    return out


async def unicast_part(args: Any) -> list[Case]:
    """Pushes by mid: one host per ``--workers`` value, then two hosts (users on B, then split)."""
    cases: list[Case] = []
    spec = {"rooms": 0, "mode": "mid", "group": 1}
    n, rates = args.conns, args.rates
    for workers in args.workers:
        progress(f"hosts: unicast, one host, {workers} worker(s), {n:,} users")
        plan = MidPlan(n, args.size)
        results = await push_case(
            with_rates(args, rates), one_host(args, workers), args.transport, n, spec, plan
        )
        cases += [
            Case("unicast", "one host", str(workers), ALL, n, "-", rate, r)
            for rate, r in zip(rates, results, strict=True)
        ]
    workers_text = " + ".join([str(args.host_workers)] * 2)
    async with running(two_hosts(args)) as server:
        assert isinstance(server, TwoHosts)
        for subscribers in (ON_B, SPLIT):
            progress(f"hosts: unicast, two hosts, {n:,} users {subscribers}, pushes through A")
            measured, idle = await across(args, server, subscribers, n, spec, MidPlan(n, args.size), rates)
            cases += [
                Case("unicast", "two hosts", workers_text, subscribers, n, "-", rate, r, idle, commands, warm)
                for rate, (r, commands, warm) in zip(rates, measured, strict=True)
            ]
        cut = server.log_count("slow consumer")
        if cut:
            progress(f"  warning: the hosts cut {cut} slow consumers")
    return cases


async def rooms_part(args: Any) -> list[Case]:
    """Room pushes: one host per ``--workers`` value, then two hosts with every room on both."""
    cases: list[Case] = []
    n, rooms, rates = args.room_conns, args.rooms, args.room_rates
    spec = {"rooms": rooms, "mode": "room"}
    for workers in args.workers:
        progress(f"hosts: rooms, one host, {workers} worker(s), {n:,} conns in {rooms} rooms")
        plan = RoomPlan(n, rooms, args.size)
        results = await push_case(
            with_rates(args, rates), one_host(args, workers), args.transport, n, spec, plan
        )
        cases += [
            Case("rooms", "one host", str(workers), ALL, n, rooms, rate, r)
            for rate, r in zip(rates, results, strict=True)
        ]
    workers_text = " + ".join([str(args.host_workers)] * 2)
    async with running(two_hosts(args)) as server:
        assert isinstance(server, TwoHosts)
        progress(f"hosts: rooms, two hosts, {n:,} conns in {rooms} rooms {SPLIT}, pushes through A")
        measured, idle = await across(args, server, SPLIT, n, spec, RoomPlan(n, rooms, args.size), rates)
        cases += [
            Case("rooms", "two hosts", workers_text, SPLIT, n, rooms, rate, r, idle, commands, warm)
            for rate, (r, commands, warm) in zip(rates, measured, strict=True)
        ]
    return cases


HEADER = (
    "setup", "workers", "subscribers", "conns", "rooms", "target/s", "pushes/s", "delivered/s",
    "server CPU %", "deliveries / server CPU-s", "Redis CPU ms / 1,000 pushes",
    "same, above Redis's idle", "p50 ms", "p99 ms",
    "max ms", "lost", "dup", "reorder", "failed pushes", "generators CPU %",
)  # fmt: skip
RATIO_HEADER = (
    "part", "subscribers", "target/s", "two hosts / one host: deliveries per server CPU-s",
    "two hosts / one host: p99", "server CPU-ms per 1,000 deliveries: one host -> two hosts",
)  # fmt: skip


def row(case: Case) -> tuple[Any, ...]:
    r = case.result
    return (
        case.setup, case.workers, case.subscribers, case.conns, case.rooms, case.target, r.rate,
        r.per_second, 100 * r.usage.cpu / r.seconds, r.per_cpu, case.redis_ms(), case.redis_ms(True),
        1000 * r.p50, 1000 * r.p99, 1000 * r.max, r.lost, r.dup, r.reorder,
        f"{r.failed_pushes:,} (+{case.warm_failed:,} in warm-up)" if case.warm_failed else r.failed_pushes,
        100 * r.usage.client_cpu / r.seconds,
    )  # fmt: skip


def ratio_rows(cases: list[Case]) -> list[tuple[Any, ...]]:
    """Each two-host case against the one-host case of the same part and rate (the first
    ``--workers`` value)."""
    base: dict[tuple[str, float], Case] = {}
    for case in cases:
        if case.setup == "one host":
            base.setdefault((case.part, case.target), case)
    out = []
    for case in cases:
        one = base.get((case.part, case.target))
        if case.setup != "two hosts" or one is None:
            continue
        mine, theirs = case.result, one.result
        out.append(
            (
                case.part,
                case.subscribers,
                case.target,
                quotient(mine.per_cpu, theirs.per_cpu),
                quotient(mine.p99, theirs.p99),
                f"{1000 / theirs.per_cpu:.3g} -> {1000 / mine.per_cpu:.3g}"
                if theirs.per_cpu > 0 and mine.per_cpu > 0
                else "-",
            )
        )
    return out


def idle_text(usage: Usage) -> str:
    """Total and per-process CPU of an idle phase, as % of one core."""
    per = [f"{name} {100 * cpu / usage.seconds:.1f}" for name, cpu, _, _ in usage.rows if cpu > 0.005]
    return f"{100 * usage.cpu / usage.seconds:.1f} in all" + (f" ({', '.join(per)})" if per else "")


def commands_text(commands: dict[str, tuple[float, float]], limit: int = 8) -> str:
    """The commands with the most Redis time per push first."""
    top = sorted(commands.items(), key=lambda item: -item[1][1])[:limit]
    return ", ".join(f"{name} {calls:.2f} ({usec:.1f} µs)" for name, (calls, usec) in top)


def render(args: Any, cases: list[Case]) -> str:
    """The tables (unicast, rooms), the ratios, and every process's CPU."""
    blocks = []
    for part, what in (("unicast", "Unicast by mid"), ("rooms", "Room fan-out")):
        mine = [c for c in cases if c.part == part]
        if mine:
            blocks.append(f"{what}, pushes through host A:\n\n" + table(HEADER, [row(c) for c in mine]))
    ratios = ratio_rows(cases)
    if ratios:
        blocks.append(table(RATIO_HEADER, ratios))
    splits = []
    for c in cases:
        label = f"{c.part} {c.setup} ({c.subscribers}) {c.target:g}/s"
        splits.append(f"- {label}: {cpu_split(c.result)}")
    blocks.append("Server CPU seconds per process during the measured phase:\n\n" + "\n".join(splits))
    commands = [
        f"- {c.part} ({c.subscribers}) {c.target:g}/s: {commands_text(c.commands)}"
        for c in cases
        if c.commands
    ]
    if commands:
        blocks.append(
            "Redis commands per push (two hosts; `INFO commandstats`, warm-up included; the commands a "
            "script runs are inside its EVALSHA time and also counted on their own): calls per push, "
            "and Redis's microseconds in the command per push:\n\n" + "\n".join(commands)
        )
    idles: dict[str, Usage] = {}
    for c in cases:
        if c.idle is not None:
            idles.setdefault(f"{c.part}, two hosts ({c.subscribers})", c.idle)
    if idles:
        lines = [f"- {label}: {idle_text(usage)}" for label, usage in idles.items()]
        blocks.append(
            "Idle CPU of the two-host setup (connections up, no pushes), % of one core:\n\n"
            + "\n".join(lines)
        )
    blocks += [
        f"{c.part} {c.setup} ({c.subscribers}) {c.target:g}/s: {c.result.profile}"
        for c in cases
        if c.result.profile
    ]
    blocks.append(
        f"Body {args.size} bytes; {args.transport.upper()} clients; {room_text(args)}; "
        f"{args.duration:g} s measured per rate after a "
        f"{args.warm_seconds:g} s warm-up. Two hosts: `host-a` and `host-b`, {args.host_workers} "
        "worker(s) each, one redis-server (no persistence), every push through host A's HTTP API; "
        "server CPU = both masters' process trees + redis-server. One host: no Redis (the inbox of "
        "pushes by mid is the embedded SQLite store; with two hosts it is in Redis)."
    )
    return "\n\n".join(blocks)


async def run(args: Any) -> str:
    problem = redis_missing()
    if problem:
        raise Missing(problem)
    cases: list[Case] = []
    if "unicast" in args.parts:
        cases += await unicast_part(args)
    if "rooms" in args.parts:
        cases += await rooms_part(args)
    return render(args, cases)


def rates_of(rates: list[float]) -> str:
    return ",".join(f"{r:g}" for r in rates)


def record(args: Any, text: str) -> None:
    parts = []
    if "unicast" in args.parts:
        parts.append(f"unicast {args.conns:,} users at {rates_of(args.rates)}/s")
    if "rooms" in args.parts:
        parts.append(
            f"fan-out {args.room_conns:,} conns in {args.rooms} rooms at {rates_of(args.room_rates)}/s"
        )
    append(f"Two hosts on one Redis: {', '.join(parts)}", text)
