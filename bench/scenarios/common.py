"""Pieces every scenario uses: server + fleet lifetimes, CPU metering with progress, quiescence."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.fleet import Fleet, processes_for
from bench.procs import ProcessGroup, Sample, cpu_delta, cpu_seconds, per_process
from bench.report import progress
from bench.servers import PER_WORKER, ROOT, MpimServer, NchanServer, Server


@asynccontextmanager
async def running(server: Server) -> AsyncIterator[Server]:
    try:
        await server.start()
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def fleet_for(connections: int, deadline: float, minimum: int = 1) -> AsyncIterator[Fleet]:
    fleet = await Fleet.start(processes_for(connections, minimum), deadline)
    try:
        yield fleet
    finally:
        await fleet.stop()


Setting = tuple[str, str, Any]  # (section, key, value) of one ``--set``


def setting(text: str) -> Setting:
    """``--set section.key=value``, the value in TOML syntax: ``0.002``, ``true``, ``"text"``, ``[1, 2]``."""
    name, eq, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not eq or not dot or not section or not key or "." in key:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected section.key=value, e.g. inbox.group_window=0.002"
        )
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        raise argparse.ArgumentTypeError(
            f'{text!r}: the value is not TOML (strings need quotes: {section}.{key}="text")'
        ) from None
    return section, key, value


def with_settings(args: Any, overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``overrides`` with every ``--set`` of the command line applied on top (later ones win)."""
    merged = {name: dict(table) for name, table in overrides.items()}
    for section, key, value in getattr(args, "set", None) or ():
        merged.setdefault(section, {})[key] = value
    return merged


ROOM_OPTIONS = {"mode": "room_mode", "batch": "batch", "batch_delay": "batch_delay", "max_delay": "max_delay"}


def room_overrides(args: Any) -> dict[str, Any]:
    """The ``[room]`` keys set on the command line (``--room-mode``, ``--batch``...); the rest is mpim's."""
    given = {key: getattr(args, option, None) for key, option in ROOM_OPTIONS.items()}
    return {key: value for key, value in given.items() if value is not None}


def room_text(args: Any) -> str:
    """``[room]`` as run: the keys given, or mpim's defaults."""
    given = room_overrides(args)
    keys = ", ".join(f"{key} = {value!r}" for key, value in given.items())
    return f"`[room]` {keys}, the rest mpim's defaults" if given else "mpim's default `[room]`"


def mpim_overrides(args: Any) -> dict[str, dict[str, Any]]:
    """Config overrides shared by the scenarios (long heartbeat: connections idle through a run,
    the ``[room]`` keys given), then the command line's ``--set section.key=value``."""
    return with_settings(
        args,
        {
            "protocol": {"heartbeat": 600.0, "handshake_timeout": 60.0},
            "room": room_overrides(args),
        },
    )


def make_mpim(args: Any, workers: int, overrides: dict[str, dict[str, Any]] | None = None) -> MpimServer:
    """mpim with ``workers`` workers: the scenarios' overrides, or ``overrides`` ({} = mpim's defaults);
    ``--set`` applies on top of either."""
    root = Path(args.server_root).resolve() if args.server_root else ROOT
    sections = mpim_overrides(args) if overrides is None else with_settings(args, overrides)
    return MpimServer(workers, sections, root)


def rates_list(text: str) -> list[float]:
    """``--rates 100,3000``: comma-separated rates, each above 0."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or not all(0 < v < float("inf") for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of rates above 0, e.g. 100,3000")
    return values


def check_capacity(server: Server, conns: int) -> None:
    """Refuse more connections than the server's workers may hold here (~18,000 sockets a process)."""
    if isinstance(server, MpimServer | NchanServer) and conns > PER_WORKER * server.workers:
        raise ValueError(
            f"{conns:,} connections need more than {server.workers} worker(s): a process may hold "
            f"~{PER_WORKER:,} sockets here (use --conns <= {PER_WORKER * server.workers:,})"
        )


async def connect(fleet: Fleet, spec: dict[str, Any], total: int) -> tuple[int, int, float]:
    """(connected, failed, wall seconds) for ``total`` connections over the fleet."""
    started = time.monotonic()
    replies = await fleet.connect(spec, total)
    ok = sum(r["ok"] for r in replies)
    failed = sum(r["failed"] for r in replies)
    return ok, failed, time.monotonic() - started


@dataclass
class Usage:
    seconds: float
    cpu: float  # all server processes
    worker_cpu: float
    rows: list[tuple[str, float, float, int]]  # (process, CPU seconds, of which system, RSS bytes)
    client_cpu: float = 0.0  # the load generators, for judging whether they kept up

    def cpu_of(self, prefix: str) -> float:
        return sum(cpu for name, cpu, _, _ in self.rows if name.startswith(prefix))


class Meter:
    """CPU and RSS of a server's processes over one phase."""

    def __init__(self, group: ProcessGroup, workers: list[int], clients: list[int] | None = None) -> None:
        self.group = group
        self.workers = workers
        self.clients = clients or []
        self.before = Sample()
        self.clients_before = 0.0
        self.started = 0.0

    def client_cpu(self) -> float:
        total = 0.0
        for pid in self.clients:
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += cpu_seconds(pid)
        return total

    def start(self) -> None:
        self.group.refresh()
        self.before = self.group.sample()
        self.clients_before = self.client_cpu()
        self.started = time.monotonic()

    def now(self) -> tuple[float, float]:
        """(seconds since start, server CPU seconds since start)."""
        return time.monotonic() - self.started, cpu_delta(self.before, self.group.sample())

    def stop(self) -> Usage:
        after = self.group.sample()
        return Usage(
            seconds=time.monotonic() - self.started,
            cpu=cpu_delta(self.before, after),
            worker_cpu=cpu_delta(self.before, after, self.workers),
            rows=per_process(self.group, self.before, after),
            client_cpu=self.client_cpu() - self.clients_before,
        )


async def report_progress(fleet: Fleet, meter: Meter, total: float, every: float = 2.0) -> None:
    """Print a progress line every ``every`` seconds until cancelled."""
    last_recv = 0
    last_t = 0.0
    while True:
        await asyncio.sleep(every)
        stats = await fleet.all({"cmd": "stats"})
        recv = sum(s["recv"] for s in stats)
        elapsed, cpu = meter.now()
        clients = meter.client_cpu() - meter.clients_before
        rate = (recv - last_recv) / max(1e-9, elapsed - last_t)
        progress(
            f"  {elapsed:5.1f}/{total:.0f}s  received {recv:,}  ({rate:,.0f}/s)  "
            f"server CPU {cpu:.1f}s ({100 * cpu / max(elapsed, 1e-9):.0f}%)  "
            f"generators {100 * clients / max(elapsed, 1e-9):.0f}%"
        )
        last_recv, last_t = recv, elapsed


async def wait_quiet(fleet: Fleet, expected: int, timeout: float = 15.0, still: float = 1.5) -> int:
    """Wait until ``expected`` messages arrived, or the count stopped moving for ``still`` seconds."""
    deadline = time.monotonic() + timeout
    last = -1
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        recv = sum(int(s["recv"]) for s in await fleet.all({"cmd": "stats"}))
        if recv >= expected:
            return recv
        if recv != last:
            last, last_change = recv, time.monotonic()
        elif time.monotonic() - last_change >= still:
            return recv
        await asyncio.sleep(0.1)
    return last


async def http_get_json(port: int, target: str) -> Any:
    """One GET to the push API on 127.0.0.1 (``Connection: close``); the JSON ``data``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return json.loads(raw.partition(b"\r\n\r\n")[2])["data"]


async def wait_router_sessions(http_port: int, expected: int, timeout: float = 30.0) -> None:
    """Until the router's tables hold ``expected`` connections (sessions reported by every worker)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if (await http_get_json(http_port, "/goim/online/total"))["conn_count"] >= expected:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the router did not see {expected:,} connections within {timeout:g}s")
        await asyncio.sleep(0.1)
