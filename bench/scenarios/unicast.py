"""Scenario 3, unicast: pushes by mid to random users at a rate (one connection per mid).

Each push is ``POST /goim/push/mids?operation=1000&mids=<mid>`` to one random
user: unbatched, one frame per delivery, through router, bus and worker.
Prints the same figures as the fan-out.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.report import append, progress
from bench.scenarios.common import make_mpim
from bench.scenarios.push import MidPlan, cpu_split, push_case, results_text, row


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conns", type=int, default=15_000, help="users, one connection each")
    p.add_argument("--rate", type=float, default=4000, help="requests per second")
    p.add_argument("--duration", type=float, default=20, help="seconds of publishing measured")
    p.add_argument("--transport", choices=["tcp", "ws", "both"], default="tcp")
    p.add_argument("--mids-per-push", type=int, default=1, help="users named in one request (1 = one each)")


async def run(args: Any) -> str:
    transports = ["tcp", "ws"] if args.transport == "both" else [args.transport]
    rows = []
    splits = []
    profiles: list[tuple[str, str]] = []
    for workers in args.workers:
        for kind in transports:
            progress(
                f"unicast: {workers} worker(s), {kind}, {args.conns:,} users, {args.rate:g} requests/s "
                f"x {args.mids_per_push} mid(s)"
            )
            plan = MidPlan(args.conns, args.size, args.mids_per_push)
            spec = {"rooms": 0, "mode": "mid", "group": args.mids_per_push}
            result = await push_case(args, make_mpim(args, workers), kind, args.conns, spec, plan)
            rows.append(row("mpim", workers, kind, args.conns, "-", result))
            splits.append(f"{workers}w {kind}: {cpu_split(result)}")
            if result.profile:
                profiles.append((f"{workers}w {kind}", result.profile))
    text = results_text(rows, splits, profiles)
    text += (
        f"\n\nBody {args.size} bytes; {args.mids_per_push} mid(s) per request, each delivered as its own "
        f"frame; {args.duration:g} s measured after a 1 s warm-up."
    )
    return text


def record(args: Any, text: str) -> None:
    append(
        f"Unicast by mid: {args.conns:,} users, {args.rate:g} requests/s x {args.mids_per_push} mid(s)", text
    )
