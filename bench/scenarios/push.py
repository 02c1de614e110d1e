"""The measured push phase shared by fan-out and unicast: publish at a rate, account every delivery.

A :class:`Plan` builds each request (stamping the body with its stream, the
stream's next seq and the send time) and knows how many deliveries the pushes
so far should make. :func:`measure` runs a warm-up, resets the generators'
counters, publishes for the duration while printing progress, waits for the
last deliveries, and returns the figures.
"""

from __future__ import annotations

import asyncio
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
    connect,
    fleet_for,
    report_progress,
    running,
    wait_quiet,
    wait_router_sessions,
)
from bench.servers import PER_WORKER, MpimServer, NchanServer, Server
from bench.tally import hist_max, merge_counts, merge_hist, percentile
from bench.wire import PUSH_OP, body


@dataclass
class Plan:
    """What to publish; ``sent`` counts pushes per stream, ``fanout`` the receivers per stream."""

    size: int
    sent: dict[int, int] = field(default_factory=dict)
    fanout: dict[int, int] = field(default_factory=dict)
    check_code: bool = True

    def next_seq(self, stream: int) -> int:
        seq = self.sent.get(stream, 0)
        self.sent[stream] = seq + 1
        return seq

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
        super().__init__(size, fanout=members(connections, rooms), check_code=not nchan)
        self.rooms = rooms
        self.nchan = nchan
        self.count = 0

    def request(self, n: int, now: float) -> tuple[int, bytes]:
        room = self.count % self.rooms
        self.count += 1
        payload = body(room, self.next_seq(room), now, self.size)
        if self.nchan:
            return room, post(f"/pub/{room}", payload)
        return room, post(f"/goim/push/room?operation={PUSH_OP}&type=live&room={room}", payload)


class MidPlan(Plan):
    """Pushes by mid to random users (one connection each): POST /goim/push/mids.

    With ``per_push`` > 1 the users are split into groups of that many
    consecutive mids and each request names one random group (``mids=a&mids=b...``):
    every member still gets its own unbatched frame, but the HTTP request and
    the bus message are shared. The group is the stream its members check.
    """

    def __init__(self, connections: int, size: int, per_push: int = 1, seed: int = 1) -> None:
        groups = -(-connections // per_push)
        fanout = {g: min(per_push, connections - g * per_push) for g in range(groups)}
        super().__init__(size, fanout=fanout)
        self.groups = groups
        self.per_push = per_push
        self.random = random.Random(seed)

    def request(self, n: int, now: float) -> tuple[int, bytes]:
        group = self.random.randrange(self.groups)
        payload = body(group, self.next_seq(group), now, self.size)
        first = group * self.per_push + 1
        mids = "&".join(f"mids={mid}" for mid in range(first, first + self.fanout[group]))
        return group, post(f"/goim/push/mids?operation={PUSH_OP}&{mids}", payload)


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

    @property
    def per_second(self) -> float:
        return self.received / self.seconds

    @property
    def per_cpu(self) -> float:
        return self.received / self.usage.cpu if self.usage.cpu else float("nan")


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
) -> PushResult:
    pusher = Pusher(port, check_code=plan.check_code)
    await pusher.open()
    try:
        if warmup > 0:
            await pusher.run_paced(plan.request, rate, warmup)
            await pusher.drain()
            await wait_quiet(fleet, plan.expected())
        await fleet.all({"cmd": "reset"})
        before = plan.expected()
        sent_before, failed_before = pusher.sent, pusher.failed
        meter.start()
        ticker = asyncio.create_task(report_progress(fleet, meter, duration))
        spy = asyncio.create_task(profiled(meter, profile, duration, native)) if profile else None
        try:
            achieved = await pusher.run_paced(plan.request, rate, duration)
            seconds = meter.now()[0]
            await pusher.drain()
            await wait_quiet(fleet, plan.expected() - before)
        finally:
            ticker.cancel()
        usage = meter.stop()
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
    )


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
)  # fmt: skip


def row(
    server: str, workers: int, transport: str, conns: int, rooms: int | str, r: PushResult
) -> tuple[Any, ...]:
    return (
        server, workers, transport, conns, rooms, r.rate, r.per_second,
        100 * r.usage.cpu / r.seconds, r.per_cpu, 1000 * r.p50, 1000 * r.p99, 1000 * r.max,
        r.lost, r.dup, r.reorder, 100 * r.usage.client_cpu / r.seconds,
    )  # fmt: skip


def cpu_split(r: PushResult) -> str:
    parts = [
        f"{name} {cpu:.2f}s ({100 * system / cpu:.0f}% system)"
        for name, cpu, system, _ in r.usage.rows
        if cpu > 0.005
    ]
    return ", ".join(parts)


def results_text(rows: list[tuple[object, ...]], splits: list[str], profiles: list[tuple[str, str]]) -> str:
    """The results table, then each process's CPU and any profiles (fan-out and unicast)."""
    text = table(HEADER, rows)
    text += "\n\nServer CPU seconds per process during the measured phase:\n\n"
    text += "\n".join(f"- {s}" for s in splits)
    return text + "".join(f"\n\n{label}: {profile}" for label, profile in profiles)


async def push_case(
    args: Any, server: Server, kind: str, conns: int, spec: dict[str, Any], plan: Plan
) -> PushResult:
    """Start ``server``, connect ``conns`` clients of ``kind``, publish ``plan`` at ``args.rate``."""
    if isinstance(server, MpimServer | NchanServer) and conns > PER_WORKER * server.workers:
        raise ValueError(
            f"{conns:,} connections need more than {server.workers} worker(s): a process may hold "
            f"~{PER_WORKER:,} sockets here (use --conns <= {PER_WORKER * server.workers:,})"
        )
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
        result = await measure(
            fleet, meter, http, plan, args.rate, args.duration, args.warm_seconds, args.profile, args.native
        )
        if isinstance(server, MpimServer):
            cuts = server.log_count("slow consumer")
            if cuts:
                progress(f"  warning: the server cut {cuts} slow consumers")
        if result.failed_pushes:
            progress(f"  warning: {result.failed_pushes} pushes failed, first: {result.first_error}")
        if result.closed:
            progress(f"  warning: {result.closed} client connections were closed during the run")
        return result
