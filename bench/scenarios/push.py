"""The measured push phase shared by fan-out and unicast: publish at a rate, account every delivery.

A :class:`Plan` builds each request (stamping the body with its stream, the
stream's next seq and the send time) and knows how many deliveries the pushes
so far should make. :func:`measure` runs a warm-up, resets the generators'
counters, publishes for the duration while printing progress, waits for the
last deliveries, and returns the figures. :func:`push_case` does that for each
rate on one set of connections; :func:`compare` runs every worker count and
transport against mpim, and with ``--peer nchan`` against nginx + Nchan, and
prints one table with the mpim/Nchan ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import profile
from bench.fleet import Fleet
from bench.pusher import Pusher, post
from bench.report import progress, table
from bench.scenarios.common import (
    Meter,
    Usage,
    check_capacity,
    connect,
    fleet_for,
    http_get_json,
    rates_list,
    report_progress,
    running,
    wait_quiet,
    wait_router_sessions,
)
from bench.servers import MpimServer, NchanServer, Server
from bench.tally import hist_max, merge_counts, merge_hist, percentile
from bench.wire import PUSH_OP, body


@dataclass
class Plan:
    """What to publish; ``sent`` counts pushes per stream, ``fanout`` the receivers per stream.

    With ``nchan`` every push of a stream goes to Nchan's publisher location
    ``/pub/<stream>`` (its subscribers listen on ``/sub/<stream>``) instead of
    mpim's push API, and a 2xx status is success (no goim ``"code":0``).
    """

    size: int
    sent: dict[int, int] = field(default_factory=dict)
    fanout: dict[int, int] = field(default_factory=dict)
    nchan: bool = False

    @property
    def check_code(self) -> bool:
        return not self.nchan

    def next_seq(self, stream: int) -> int:
        seq = self.sent.get(stream, 0)
        self.sent[stream] = seq + 1
        return seq

    def publish(self, stream: int, target: str, now: float) -> tuple[int, bytes]:
        """(stream, request) of the next message of ``stream``: to mpim's ``target``, or to Nchan."""
        payload = body(stream, self.next_seq(stream), now, self.size)
        return stream, post(f"/pub/{stream}" if self.nchan else target, payload)

    def expected(self) -> int:
        return sum(n * self.fanout.get(stream, 0) for stream, n in self.sent.items())

    def request(self, n: int, now: float) -> tuple[int, bytes]:
        """(ordering key, HTTP request) of the next push."""
        raise NotImplementedError


def members(connections: int, rooms: int) -> dict[int, int]:
    """Room index -> member count when connection i joins room i % rooms."""
    return {r: connections // rooms + (1 if r < connections % rooms else 0) for r in range(rooms)}


class RoomPlan(Plan):
    """Round-robin over the rooms: POST /goim/push/room (or Nchan's /pub/<room>)."""

    def __init__(self, connections: int, rooms: int, size: int, nchan: bool = False) -> None:
        super().__init__(size, fanout=members(connections, rooms), nchan=nchan)
        self.rooms = rooms
        self.count = 0

    def request(self, n: int, now: float) -> tuple[int, bytes]:
        room = self.count % self.rooms
        self.count += 1
        return self.publish(room, f"/goim/push/room?operation={PUSH_OP}&type=live&room={room}", now)


class MidPlan(Plan):
    """Pushes by mid to random users (one connection each): POST /goim/push/mids.

    With ``per_push`` > 1 the users are split into groups of that many
    consecutive mids and each request names one random group (``mids=a&mids=b...``):
    every member still gets its own unbatched frame, but the HTTP request and
    the bus message are shared. The group is the stream its members check.
    For Nchan (``nchan``) each user has its own channel, named after its stream
    (mid - 1), and a request POSTs to it; with ``per_push`` > 1 a group shares
    one channel (Nchan publishes one request to one channel).

    ``part`` of ``parts``: this plan publishes only to the groups g with
    g % parts == part, so several publisher processes each own their streams
    (each stream's order is then defined by one publisher).
    """

    def __init__(
        self,
        connections: int,
        size: int,
        per_push: int = 1,
        seed: int = 1,
        nchan: bool = False,
        part: int = 0,
        parts: int = 1,
    ) -> None:
        groups = -(-connections // per_push)
        fanout = {g: min(per_push, connections - g * per_push) for g in range(groups)}
        super().__init__(size, fanout=fanout, nchan=nchan)
        self.groups = groups
        self.per_push = per_push
        self.random = random.Random(seed)
        self.part = part
        self.parts = parts
        self.owned = len(range(part, groups, parts))
        if self.owned < 1:
            raise ValueError(f"{groups} group(s) cannot be split into {parts} publishers")

    def request(self, n: int, now: float) -> tuple[int, bytes]:
        group = self.part + self.parts * self.random.randrange(self.owned)
        first = group * self.per_push + 1
        mids = "&".join(f"mids={mid}" for mid in range(first, first + self.fanout[group]))
        return self.publish(group, f"/goim/push/mids?operation={PUSH_OP}&{mids}", now)


@dataclass
class PushResult:
    pushes: int
    rate: float
    seconds: float
    received: int
    expected: int
    lost: int
    dup: int
    reorder: int
    misdelivered: int
    closed: int
    failed_pushes: int
    first_error: str
    p50: float
    p99: float
    max: float
    usage: Usage
    profile: str = ""
    load: float = float("nan")  # 1-minute load average when the measured phase started
    per_write: float = float("nan")  # mpim: room frames per flush (the workers' counters)
    window_ms: float = float("nan")  # mpim: the widest adaptive window a worker reported last
    busy: float = float("nan")  # mpim: the highest share of time a worker spent writing rooms, last reported
    reports: list[dict[str, Any]] = field(default_factory=list)  # the generators' own, for extra counters
    batching: str = ""  # mpim: inbox writes per commit, link records per frame over the phase
    answers: list[float] = field(default_factory=list)  # a sequential publisher: write -> answer, seconds

    @property
    def per_second(self) -> float:
        return self.received / self.seconds

    @property
    def per_cpu(self) -> float:
        return self.received / self.usage.cpu if self.usage.cpu else float("nan")


async def router_counters(port: int) -> dict[str, int]:
    """The router's inbox commits/writes and link frames/records (GET /mpim/stats); {} if unknown."""
    try:
        data = await http_get_json(port, "/mpim/stats")
    except (OSError, ValueError, KeyError, TypeError, TimeoutError):
        return {}
    inbox = data.get("inbox", {})
    counters = {f"inbox_{k}": int(v) for k, v in inbox.items() if k in ("commits", "writes", "waits")}
    counters.update({f"link_{k}": int(v) for k, v in data.get("links", {}).items()})
    return counters


def batching_text(before: dict[str, int], after: dict[str, int]) -> str:
    """E.g. "inbox 2.9 writes per commit, link 1.4 records per frame" over a phase (what is known)."""
    parts = []
    for name, num, den, unit in (
        ("inbox", "inbox_writes", "inbox_commits", "writes per commit"),
        ("link", "link_records", "link_frames", "records per frame"),
    ):
        if num in after and den in after and num in before and den in before:
            n, d = after[num] - before[num], after[den] - before[den]
            if d > 0:
                parts.append(f"{name} {n / d:.2f} {unit} ({d:,} {den.split('_')[1]})")
                if name == "inbox" and "inbox_waits" in after and "inbox_waits" in before:
                    parts[-1] += f", {100 * (after['inbox_waits'] - before['inbox_waits']) / d:.0f}% waited"
    return ", ".join(parts)


async def measure(
    fleet: Fleet,
    meter: Meter,
    port: int,
    plan: Plan,
    rate: float,
    duration: float,
    warmup: float = 1.0,
    profile: str = "",
    native: bool = False,
    counted: bool = False,
    tick: float = 0.002,
    sequential: bool = False,
) -> PushResult:
    """``counted``: the server is mpim, whose router's batching counters and workers' room batcher
    counters are read around the phase; ``tick``: the publisher's pacing step (requests due within
    one tick leave together); ``sequential``: instead of pacing, one keep-alive connection that
    writes each request when the previous one was answered (``rate`` is not used)."""
    pusher = Pusher(
        port, check_code=plan.check_code, **({"connections": 1, "window": 1} if sequential else {})
    )

    async def publish(seconds: float) -> float:
        if sequential:
            return await pusher.run_sequential(plan.request, seconds)
        return await pusher.run_paced(plan.request, rate, seconds, tick)

    await pusher.open()
    try:
        if warmup > 0:
            await publish(warmup)
            await pusher.drain()
            await wait_quiet(fleet, plan.expected())
        await fleet.all({"cmd": "reset"})
        before = plan.expected()
        sent_before, failed_before = pusher.sent, pusher.failed
        counters = await router_counters(port) if counted else {}
        load = os.getloadavg()[0]
        before_stats = await batcher_stats(port) if counted else {}
        pusher.answer_times.clear()
        meter.start()
        ticker = asyncio.create_task(report_progress(fleet, meter, duration))
        spy = asyncio.create_task(profiled(meter, profile, duration, native)) if profile else None
        try:
            achieved = await publish(duration)
            seconds = meter.now()[0]
            await pusher.drain()
            await wait_quiet(fleet, plan.expected() - before)
        finally:
            ticker.cancel()
        usage = meter.stop()
        batching = batching_text(counters, await router_counters(port)) if counted else ""
        after_stats = await batcher_stats(port) if counted else {}
        profile_text = await spy if spy is not None else ""
        reports: list[dict[str, Any]] = await fleet.all(
            {"cmd": "finish", "sent": {str(k): v for k, v in plan.sent.items()}}
        )
    finally:
        pusher.close()
    hist = merge_hist(reports)
    return PushResult(
        pushes=pusher.sent - sent_before,
        rate=achieved,
        seconds=seconds,
        received=merge_counts(reports, "recv"),
        expected=plan.expected() - before,
        lost=merge_counts(reports, "lost"),
        dup=merge_counts(reports, "dup"),
        reorder=merge_counts(reports, "reorder"),
        misdelivered=merge_counts(reports, "misdelivered"),
        closed=merge_counts(reports, "closed"),
        failed_pushes=pusher.failed - failed_before,
        first_error=pusher.first_error,
        p50=percentile(hist, 0.50),
        p99=percentile(hist, 0.99),
        max=hist_max(hist),
        usage=usage,
        profile=profile_text,
        load=load,
        per_write=quotient(
            after_stats.get("room_frames", 0) - before_stats.get("room_frames", 0),
            after_stats.get("room_flushes", 0) - before_stats.get("room_flushes", 0),
        ),
        window_ms=after_stats.get("room_window_us", float("nan")) / 1000,
        busy=after_stats.get("room_busy_pct", float("nan")),
        reports=reports,
        batching=batching,
        answers=list(pusher.answer_times),
    )


async def batcher_stats(http_port: int) -> dict[str, float]:
    """mpim's room batcher counters summed over the workers (the window: the widest), as last reported.

    Workers report every ``[router] online_interval`` (5 s), so a delta over a
    phase is shifted by up to that much: a rate, not an exact count.
    """
    try:
        workers = await http_get_json(http_port, "/mpim/workers")
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    out: dict[str, float] = {}
    for worker in workers:
        stats = worker.get("stats") or {}
        for key in ("room_frames", "room_flushes", "room_deliveries"):
            out[key] = out.get(key, 0) + stats.get(key, 0)
        for key in ("room_window_us", "room_busy_pct"):
            if key in stats:
                out[key] = max(out.get(key, 0), stats[key])
    return out


async def profiled(meter: Meter, name: str, seconds: float, native: bool = False) -> str:
    """py-spy's top functions of the server process called ``name`` over the measured phase."""
    pids = [pid for pid, title in meter.group.names.items() if title == name]
    if not pids:
        return f"(no process named {name!r} to profile: {sorted(meter.group.names.values())})"
    with tempfile.TemporaryDirectory() as tmp:
        raw = await profile.record(pids[0], seconds, Path(tmp) / "profile.txt", native)
    return profile.render(name, raw)


HEADER = (
    "server", "workers", "transport", "conns", "rooms", "pushes/s", "delivered/s", "server CPU %",
    "deliveries / server CPU-s", "p50 ms", "p99 ms", "max ms", "lost", "dup", "reorder", "generators CPU %",
    "msgs / write", "window ms", "busy %", "load",
)  # fmt: skip
RATIO_HEADER = (
    "workers", "target pushes/s", "mpim/Nchan deliveries per server CPU-s", "mpim/Nchan p99 latency"
)  # fmt: skip


def row(
    server: str, workers: int, transport: str, conns: int, rooms: int | str, r: PushResult
) -> tuple[Any, ...]:
    return (
        server, workers, transport, conns, rooms, r.rate, r.per_second,
        100 * r.usage.cpu / r.seconds, r.per_cpu, 1000 * r.p50, 1000 * r.p99, 1000 * r.max,
        r.lost, r.dup, r.reorder, 100 * r.usage.client_cpu / r.seconds,
        r.per_write, r.window_ms, r.busy, r.load,
    )  # fmt: skip


def quotient(a: float, b: float) -> float:
    """a / b, or NaN (printed "-") when b is 0 or either is not a number."""
    return a / b if b and math.isfinite(a) and math.isfinite(b) else float("nan")


def ratio_row(workers: int, rate: float, mine: PushResult, theirs: PushResult) -> tuple[Any, ...]:
    """(workers, rate, mpim/Nchan deliveries per server CPU-s, mpim/Nchan p99)."""
    return workers, rate, quotient(mine.per_cpu, theirs.per_cpu), quotient(mine.p99, theirs.p99)


def cpu_split(r: PushResult) -> str:
    """Each server process's CPU seconds, then all of them per delivery, user and kernel apart
    (what the server's own code costs, and what the system calls it makes cost)."""
    parts = [
        f"{name} {cpu:.2f}s ({100 * system / cpu:.0f}% system)"
        for name, cpu, system, _ in r.usage.rows
        if cpu > 0.005
    ]
    text = ", ".join(parts)
    if r.received:
        system = 1e6 * sum(row[2] for row in r.usage.rows) / r.received
        user = 1e6 * sum(row[1] for row in r.usage.rows) / r.received - system
        text += f"; per delivery {user:.1f} µs user + {system:.1f} µs system"
    if r.answers:
        answers = sorted(r.answers)
        p50, p99 = answers[len(answers) // 2], answers[min(len(answers) - 1, int(0.99 * len(answers)))]
        text += f"; answers p50 {1000 * p50:.2f} ms, p99 {1000 * p99:.2f} ms"
    return text + (f"; {r.batching}" if r.batching else "")


def results_text(
    rows: list[tuple[object, ...]],
    splits: list[str],
    profiles: list[tuple[str, str]],
    run_column: bool = False,
) -> str:
    """The results table, then each process's CPU and any profiles (fan-out and unicast)."""
    text = table(("run", *HEADER) if run_column else HEADER, rows)
    text += "\n\nServer CPU seconds per process during the measured phase:\n\n"
    text += "\n".join(f"- {s}" for s in splits)
    return text + "".join(f"\n\n{label}: {profile}" for label, profile in profiles)


def add_push_arguments(
    p: argparse.ArgumentParser, conns: int, conns_help: str, rate: float, unit: str
) -> None:
    """Options of the push scenarios (fan-out and unicast); ``unit`` names what ``--rate`` counts."""
    p.add_argument("--conns", type=int, default=conns, help=conns_help)
    p.add_argument("--rate", type=float, default=rate, help=f"{unit} per second")
    p.add_argument(
        "--rates",
        type=rates_list,
        default=[],
        help="several rates, comma-separated (100,3000): each measured in turn on the same connections "
        "(replaces --rate)",
    )
    p.add_argument("--duration", type=float, default=20, help="seconds of publishing measured (each rate)")
    p.add_argument("--transport", choices=["tcp", "ws", "both"], default="tcp")
    p.add_argument(
        "--tick",
        type=float,
        default=0.002,
        help="the publisher's pacing step, seconds: the requests due in one step leave together "
        "(smaller = smoother arrivals; the event loop's timers have 1 ms resolution)",
    )
    p.add_argument(
        "--peer",
        choices=["none", "nchan"],
        default="none",
        help="also run nginx + Nchan (WebSocket) and print the mpim/Nchan ratios",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every server, transport and rate this many times, interleaved; prints median (min-max)",
    )
    p.add_argument("--plot", default="", help="draw p99 and deliveries per CPU-s against the rate (PNG)")
    p.add_argument(
        "--sequential",
        action="store_true",
        help="instead of pacing: one keep-alive connection, each request written when the previous one "
        "was answered (a backend that waits for every answer; --rate and --rates do not apply)",
    )


def rates_of(args: Any) -> list[float]:
    """The rates to measure: ``--rates``, else ``--rate``; ``[0.0]`` for a sequential publisher."""
    if getattr(args, "sequential", False):
        return [0.0]
    rates: list[float] = args.rates or [args.rate]
    return rates


def rates_text(args: Any) -> str:
    return ", ".join(rate_label(rate) for rate in rates_of(args))


def rate_label(rate: float) -> str:
    """A target rate as the tables show it: 0 is the sequential publisher's (no target)."""
    return f"{rate:g}" if rate > 0 else "sequential"


async def push_case(
    args: Any, server: Server, kind: str, conns: int, spec: dict[str, Any], plan: Plan
) -> list[PushResult]:
    """Start ``server``, connect ``conns`` clients of ``kind``, publish ``plan`` at each of the rates.

    One result per rate of :func:`rates_of`, in order, measured one after the
    other on the same connections (each after its own warm-up).
    """
    check_capacity(server, conns)
    rates = rates_of(args)
    spied = args.profile if isinstance(server, MpimServer) else ""  # names are mpim's processes
    results = []
    async with running(server), fleet_for(conns, args.deadline, minimum=2) as fleet:
        if isinstance(server, NchanServer):
            port = http = server.port
        else:
            assert isinstance(server, MpimServer)
            port = server.tcp_port if kind == "tcp" else server.ws_port
            http = server.http_port
        ok, failed, seconds = await connect(
            fleet, {**spec, "kind": kind, "port": port, "path": "/sub"}, conns
        )
        progress(f"  {ok:,} {kind} clients in {seconds:.1f}s ({failed} failed)")
        if failed:
            raise RuntimeError(f"{failed} connections failed:\n{server.log_tail()}")
        if isinstance(server, MpimServer):
            await wait_router_sessions(http, conns)  # every session is in the router's tables
        await asyncio.sleep(0.3)  # and room subscriptions have crossed the bus
        assert server.group is not None
        meter = Meter(server.group, server.worker_pids(), fleet.pids)
        for rate in rates:
            if len(rates) > 1:
                progress(f"  {rate:g}/s")
            result = await measure(
                fleet, meter, http, plan, rate, args.duration, args.warm_seconds, spied, args.native,
                counted=isinstance(server, MpimServer), tick=getattr(args, "tick", 0.002),
                sequential=getattr(args, "sequential", False),
            )  # fmt: skip
            if result.failed_pushes:
                progress(f"  warning: {result.failed_pushes} pushes failed, first: {result.first_error}")
            if result.closed:
                progress(f"  warning: {result.closed} client connections were closed during the run")
            results.append(result)
        if isinstance(server, MpimServer):
            cuts = server.log_count("slow consumer")
            if cuts:
                progress(f"  warning: the server cut {cuts} slow consumers")
    return results
