"""Reliable push by mid with acks, side by side with plain unicast, and the inbox write cost.

The unicast scenario's load (``POST /goim/push/mids?operation=1000&mids=<mid>``
to one random user per request, one connection per user, at each of
``--rates``) against three servers in one run, each with the same users:

- ``off``: goim clients, ``[inbox] enabled = false`` (goim's at-most-once
  unicast: nothing is stored);
- ``goim``: goim clients, the inbox on (mpim's default: every push by mid is
  appended to the user's inbox before it is pushed; the client gets seq 0);
- ``ack``: clients with ``"caps": ["ack"]``, which resume (op 20 ``{}``) after
  the Auth reply, receive every push with its stream seq and ack it (op 18),
  one cumulative ack per read (:mod:`bench.ackclients`).

Prints per variant what the unicast scenario prints plus the router's and the
workers' CPU per push, then per rate the cost table: the inbox write per
message is the router's CPU per push with the inbox on minus with it off
(goim clients both: the only difference is the append); reliability is the
ack variant minus the goim one (acks, cursor writes, the seq bookkeeping).
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.report import append, progress, table
from bench.scenarios.common import make_mpim, mpim_overrides, rates_list
from bench.scenarios.push import MidPlan, PushResult, cpu_split, push_case, quotient, rates_of, rates_text
from bench.tally import merge_counts

VARIANTS = {
    "off": ("goim", "off"),  # name: (clients, inbox)
    "goim": ("goim", "on"),
    "ack": ("ack", "on"),
}
HEADER = (
    "clients", "inbox", "workers", "transport", "conns", "pushes/s", "delivered/s", "server CPU %",
    "deliveries / server CPU-s", "router µs / push", "workers µs / push", "p50 ms", "p99 ms", "max ms",
    "lost", "dup", "reorder", "acks / push", "generators CPU %",
)  # fmt: skip
COST_HEADER = (
    "workers", "transport", "target pushes/s", "inbox write: router µs / msg (goim - off)",
    "reliability: router µs / msg (ack - goim)", "reliability: workers µs / msg (ack - goim)",
    "server µs / delivery off / goim / ack", "deliveries per CPU-s, ack ÷ off",
)  # fmt: skip


def variants_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or any(name not in VARIANTS for name in names):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(VARIANTS)}")
    return list(dict.fromkeys(names))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conns", type=int, default=4000, help="users, one connection each")
    p.add_argument("--rate", type=float, default=1000, help="requests (one mid each) per second")
    p.add_argument(
        "--rates", type=rates_list, default=[], help="several rates, comma-separated (100,1000,3000)"
    )
    p.add_argument("--duration", type=float, default=10, help="seconds of publishing measured (each rate)")
    p.add_argument("--transport", choices=["tcp", "ws", "both"], default="tcp")
    p.add_argument(
        "--variants",
        type=variants_list,
        default=list(VARIANTS),
        help="servers/clients to run: off (goim clients, inbox off), goim (inbox on), ack (default: all)",
    )


def overrides(args: Any, variant: str) -> dict[str, dict[str, Any]]:
    sections = mpim_overrides(args)
    if VARIANTS[variant][1] == "off":
        sections["inbox"] = {"enabled": False}
    return sections


async def case(args: Any, workers: int, kind: str, variant: str) -> list[PushResult]:
    """One server and set of clients of ``variant``; a result per rate."""
    server = make_mpim(args, workers, overrides(args, variant))
    plan = MidPlan(args.conns, args.size)
    spec: dict[str, Any] = {"rooms": 0, "mode": "mid", "group": 1}
    if VARIANTS[variant][0] == "ack":
        spec["ack"] = True
    return await push_case(args, server, kind, args.conns, spec, plan)


def micro(cpu: float, count: int) -> float:
    """Microseconds of CPU per item (NaN without items)."""
    return 1e6 * cpu / count if count else float("nan")


def router_us(r: PushResult) -> float:
    return micro(r.usage.cpu_of("router"), r.received)


def workers_us(r: PushResult) -> float:
    return micro(r.usage.cpu_of("worker"), r.received)


def server_us(r: PushResult) -> float:
    return micro(r.usage.cpu, r.received)


def row(variant: str, workers: int, transport: str, conns: int, r: PushResult, acks: int) -> tuple[Any, ...]:
    clients, inbox = VARIANTS[variant]
    return (
        clients, inbox, workers, transport, conns, r.rate, r.per_second, 100 * r.usage.cpu / r.seconds,
        r.per_cpu, router_us(r), workers_us(r), 1000 * r.p50, 1000 * r.p99, 1000 * r.max, r.lost, r.dup,
        r.reorder, quotient(acks, r.received), 100 * r.usage.client_cpu / r.seconds,
    )  # fmt: skip


def cost_row(workers: int, transport: str, rate: float, by: dict[str, PushResult]) -> tuple[Any, ...]:
    """The differences between variants at one rate (NaN where a variant was not run)."""
    nan = float("nan")
    off, goim, ack = by.get("off"), by.get("goim"), by.get("ack")
    inbox = router_us(goim) - router_us(off) if goim and off else nan
    rel_router = router_us(ack) - router_us(goim) if ack and goim else nan
    rel_workers = workers_us(ack) - workers_us(goim) if ack and goim else nan
    whole = " / ".join(f"{server_us(r):.0f}" if r else "-" for r in (off, goim, ack))
    ratio = quotient(ack.per_cpu, off.per_cpu) if ack and off else nan
    return workers, transport, rate, inbox, rel_router, rel_workers, whole, ratio


async def run(args: Any) -> str:
    transports = ["tcp", "ws"] if args.transport == "both" else [args.transport]
    rates = rates_of(args)
    rows: list[tuple[Any, ...]] = []
    costs: list[tuple[Any, ...]] = []
    splits: list[str] = []
    profiles: list[tuple[str, str]] = []
    for workers in args.workers:
        for kind in transports:
            by_rate: list[dict[str, PushResult]] = [{} for _ in rates]
            for variant in args.variants:
                clients, inbox = VARIANTS[variant]
                progress(
                    f"reliable: {clients} clients, inbox {inbox}, {workers} worker(s), {kind}, "
                    f"{args.conns:,} users, {rates_text(args)} requests/s"
                )
                results = await case(args, workers, kind, variant)
                for i, (rate, result) in enumerate(zip(rates, results, strict=True)):
                    by_rate[i][variant] = result
                    acks = merge_counts(result.reports, "acks")
                    rows.append(row(variant, workers, kind, args.conns, result, acks))
                    label = f"{variant} {workers}w {kind}" + (f" {rate:g}/s" if len(rates) > 1 else "")
                    splits.append(f"{label}: {cpu_split(result)}")
                    if result.profile:
                        profiles.append((label, result.profile))
            costs.extend(cost_row(workers, kind, rate, by) for rate, by in zip(rates, by_rate, strict=True))
    text = table(HEADER, rows)
    text += "\n\n" + table(COST_HEADER, costs)
    text += "\n\nServer CPU seconds per process during the measured phase:\n\n"
    text += "\n".join(f"- {s}" for s in splits)
    text += "".join(f"\n\n{label}: {profile}" for label, profile in profiles)
    return text + (
        f"\n\nBody {args.size} bytes; one mid per request; {args.duration:g} s measured after a "
        f"{args.warm_seconds:g} s warm-up, each rate on the same connections. `off`: goim clients, "
        '`[inbox] enabled = false`; `goim`: goim clients, inbox on (SQLite, `durability = "process"`); '
        "`ack`: caps ack, resume after auth, one cumulative op 18 per read. µs / push = the process's "
        "CPU over the measured phase divided by the deliveries. Inbox write = router µs / push of `goim` "
        "minus `off` (same clients, the append is the only difference); reliability = `ack` minus `goim` "
        "(acks and cursor writes on the router, the seq bookkeeping and ack handling on the workers)."
    )


def record(args: Any, text: str) -> None:
    append(f"Reliable push by mid: {args.conns:,} users, {rates_text(args)} requests/s", text)
