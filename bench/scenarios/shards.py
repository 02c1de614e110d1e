"""Router shards: each shard's router CPU per push by mid, N = 1, 2, 4 at the same offered load.

For each ``--shards`` N (``[router] shards = N`` in the config written for the
run) and each ``--mids-per-push`` K, the same users (one connection each, held by
client generator processes) get the same requests/s of
``POST /goim/push/mids?operation=1000&mids=...`` naming K consecutive mids, sent
by ``--publishers`` generator processes over ``--http-conns`` keep-alive
connections (with ``SO_REUSEPORT`` shards the connections, not the requests, are
spread over the shards: many connections spread them evenly). The CPU
(user + system, ``/proc/<pid>/stat``) of every router process (``mpim: router``,
or ``mpim: router K`` when N > 1) and of the workers is read over the measured
phase. Prints, per N: each shard's router CPU-seconds per 1,000 pushes and its
share of the router CPU, the routers' total CPU per push, the workers' CPU per
push, and the forwarding cost: the routers' CPU per push at N over that at N = 1
(same K, same run), which prices the extra hop a push takes when it lands on a
shard that does not own its users. Every delivery is checked: lost must be 0.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Any

from bench.report import append, progress, table
from bench.scenarios.common import make_mpim, mpim_overrides
from bench.scenarios.publishing import Load, Phase, drive
from bench.servers import MpimServer

ROUTER = re.compile(r"^router( (\d+))?$")  # "router" (one shard) or "router K" (process titles)


def ints(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of counts of at least 1, e.g. 1,2,4")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(workers=[2])
    p.add_argument(
        "--shards",
        type=ints,
        default=[1],
        help="[router] shards to run, in turn (1; 1,2,4 once the shards are in the server)",
    )
    p.add_argument("--conns", type=int, default=10_000, help="users, one connection each")
    p.add_argument("--rate", type=float, default=2000, help="push requests per second (the same for every N)")
    p.add_argument(
        "--mids-per-push",
        type=ints,
        default=[1, 8],
        help="mids named in one request, each value a run per N (1: one user per push; 8: a request "
        "the shards split by owner)",
    )
    p.add_argument("--duration", type=float, default=15, help="seconds of publishing measured per point")
    p.add_argument("--transport", choices=["tcp", "ws"], default="tcp")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--http-conns", type=int, default=32, help="keep-alive HTTP connections, all publishers")


@dataclass
class Point:
    workers: int
    shards: int
    per_push: int
    phase: Phase

    def routers(self) -> list[tuple[str, float, float]]:
        """(process, CPU-s, of which system) of every router process, shard 0 first."""
        rows = [(name, cpu, system) for name, cpu, system, _ in self.phase.usage.rows if ROUTER.match(name)]
        return sorted(rows, key=lambda r: int(ROUTER.match(r[0]).group(2) or 0))  # type: ignore[union-attr]

    @property
    def router_cpu(self) -> float:
        return sum(cpu for _, cpu, _ in self.routers())

    def per_push_us(self, cpu: float) -> float:
        return 1e6 * cpu / self.phase.pushes if self.phase.pushes else float("nan")


HEADER = (
    "workers", "shards", "mids / push", "pushes/s", "delivered/s", "router µs / push (user + system)",
    "router CPU-s / 1,000 pushes, per shard", "share per shard", "forwarding cost (x N = 1)",
    "workers µs / push", "p50 ms", "p99 ms", "lost", "dup + reorder", "failed pushes", "busiest publisher %",
    "load",
)  # fmt: skip
SHARD_HEADER = (
    "workers", "mids / push", "shards", "process", "CPU-s", "of which system", "CPU-s / 1,000 pushes",
    "share", "1/N",
)  # fmt: skip


def rows(points: list[Point]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    one = {(p.workers, p.per_push): p for p in points if p.shards == 1}
    summary: list[tuple[Any, ...]] = []
    shards: list[tuple[Any, ...]] = []
    for p in points:
        ph = p.phase
        routers = p.routers()
        total = p.router_cpu
        system = sum(s for _, _, s in routers)
        base = one.get((p.workers, p.per_push))
        forwarding = (
            p.per_push_us(total) / base.per_push_us(base.router_cpu) if base and base.router_cpu else None
        )
        summary.append((
            p.workers, p.shards, p.per_push, ph.rate, ph.per_second,
            f"{p.per_push_us(total):.1f} ({p.per_push_us(total - system):.1f} + {p.per_push_us(system):.1f})",
            " / ".join(f"{1000 * cpu / ph.pushes:.3f}" if ph.pushes else "-" for _, cpu, _ in routers),
            " / ".join(f"{100 * cpu / total:.0f}%" if total else "-" for _, cpu, _ in routers),
            f"{forwarding:.2f}" if forwarding is not None else "-",
            p.per_push_us(ph.usage.worker_cpu), 1000 * ph.p50, 1000 * ph.p99, ph.lost, ph.dup + ph.reorder,
            ph.failed + ph.unanswered, 100 * ph.publisher_peak, ph.load,
        ))  # fmt: skip
        for name, cpu, sys_cpu in routers:
            shards.append((
                p.workers, p.per_push, p.shards, name, cpu, sys_cpu,
                1000 * cpu / ph.pushes if ph.pushes else float("nan"),
                f"{100 * cpu / total:.1f}%" if total else "-", f"{100 / p.shards:.1f}%",
            ))  # fmt: skip
    return summary, shards


def report(points: list[Point], args: Any) -> str:
    summary, shards = rows(points)
    text = table(HEADER, summary)
    text += "\n\nEach router process over the measured phase:\n\n" + table(SHARD_HEADER, shards)
    clean = [p for p in points if p.phase.clean]
    text += (
        f"\n\n{args.conns:,} users ({args.transport}), one connection each; {args.rate:g} requests/s "
        f"offered at every N, each naming K consecutive mids (K = "
        f"{', '.join(str(k) for k in args.mids_per_push)}; with several shards the mids of one request "
        f"belong to different shards and the receiving shard splits it); {args.publishers} publisher "
        f"processes over {args.http_conns} keep-alive HTTP connections; body {args.size} bytes; "
        f"{args.duration:g} s measured after a {args.warm_seconds:g} s warm-up. Router CPU is user + system "
        "of every `mpim: router*` process; the forwarding cost is the routers' CPU per push at N over "
        f"the same at N = 1 in this run. Deliveries: {len(clean)} of {len(points)} points clean "
        "(every push answered, every message delivered once and in order)."
    )
    return text


def check_routers(point: Point) -> None:
    found = len(point.routers())
    if found != point.shards:
        progress(f"  warning: {found} router process(es) for [router] shards = {point.shards}")
    if not point.phase.clean:
        ph = point.phase
        progress(
            f"  warning: lost {ph.lost}, dup {ph.dup}, reorder {ph.reorder}, misdelivered {ph.misdelivered}, "
            f"received {ph.received:,} of {ph.expected:,}, failed pushes {ph.failed + ph.unanswered}"
        )


def sharded(args: Any, workers: int, shards: int) -> MpimServer:
    """mpim with the scenarios' config and ``[router] shards = shards`` (``--set`` still on top)."""
    overrides = mpim_overrides(args)
    overrides.setdefault("router", {})["shards"] = shards
    return make_mpim(args, workers, overrides)


async def case(args: Any, workers: int, shards: int, per_push: int) -> Point:
    server = sharded(args, workers, shards)
    load = Load(args.conns, per_push, args.size, args.publishers, args.http_conns)
    [phase] = await drive(args, server, args.transport, load, [args.rate])
    point = Point(workers, shards, per_push, phase)
    check_routers(point)
    return point


async def run(args: Any) -> str:
    points = []
    for workers in args.workers:
        for per_push in args.mids_per_push:
            for shards in args.shards:
                progress(f"shards: {shards} shard(s), {workers} worker(s), {per_push} mid(s) per push")
                points.append(await case(args, workers, shards, per_push))
    return report(points, args)


def record(args: Any, text: str) -> None:
    append(
        f"Router shards: {args.conns:,} users, {args.rate:g} pushes by mid/s, "
        f"shards {', '.join(map(str, args.shards))}",
        text,
    )
