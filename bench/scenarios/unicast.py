"""Scenario 3, unicast: pushes by mid to random users at a rate (one connection per mid).

Each push is ``POST /goim/push/mids?operation=1000&mids=<mid>`` to one random
user: unbatched, one frame per delivery, through the router and the worker's link.
Prints the same figures as the fan-out. With ``--peer nchan`` the same users
subscribe over WebSocket to nginx + Nchan, one channel each, and each request
POSTs to that user's channel at the same rate; the mpim/Nchan ratios are
printed. ``--rates`` measures several rates, one after the other on the same
connections. ``--sequential`` publishes as a backend that waits for every answer:
one keep-alive connection, one request in flight, as fast as the answers come.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.report import append
from bench.scenarios.compare import compare
from bench.scenarios.push import MidPlan, PushResult, add_push_arguments, push_case, rates_text
from bench.servers import NchanServer, Server


def what(args: Any) -> str:
    """The title's middle: users, rates (or the sequential publisher) and users per request."""
    if args.sequential:
        return f"{args.conns:,} users, one sequential publisher x {args.mids_per_push} mid(s)"
    return f"{args.conns:,} users, {rates_text(args)} requests/s x {args.mids_per_push} mid(s)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_push_arguments(p, 15_000, "users, one connection each", 4000, "requests")
    p.add_argument("--mids-per-push", type=int, default=1, help="users named in one request (1 = one each)")


async def case(args: Any, server: Server, kind: str) -> list[PushResult]:
    plan = MidPlan(args.conns, args.size, args.mids_per_push, nchan=isinstance(server, NchanServer))
    spec = {"rooms": 0, "mode": "mid", "group": args.mids_per_push}
    return await push_case(args, server, kind, args.conns, spec, plan)


async def run(args: Any) -> str:
    text = await compare(
        args,
        "unicast",
        what(args),
        "-",
        lambda server, kind: case(args, server, kind),
    )
    text += (
        f"\n\nBody {args.size} bytes; {args.mids_per_push} mid(s) per request, each delivered as its own "
        f"frame; {args.duration:g} s measured after a {args.warm_seconds:g} s warm-up."
    )
    if args.sequential:
        text += (
            " Sequential publisher: one keep-alive HTTP connection, each request written as soon as "
            "the previous one was answered (pushes/s is its answer rate; the per-process lines give "
            "the publisher's write -> answer time)."
        )
    if args.peer == "nchan":
        text += (
            " Nchan: each user subscribes to its own channel (`/sub/<mid - 1>`, WebSocket) and a "
            "request POSTs to `/pub/<mid - 1>`"
            + (
                f"; with {args.mids_per_push} mids per request the users of a group share one channel"
                if args.mids_per_push > 1
                else ""
            )
            + "."
        )
    return text


def record(args: Any, text: str) -> None:
    append(f"Unicast by mid: {what(args)}", text)
