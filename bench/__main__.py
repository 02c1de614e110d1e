"""``python -m bench <scenario> [options]``: start the server, drive a scenario, print a table.

Every run talks to 127.0.0.1 only and stops by itself: the generators exit at
``--deadline`` whatever happens, and the server is stopped on the way out.
``--record`` appends the table to bench/RESULTS.md with date, commit, machine
and this command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any

import uvloop

from bench.chaos import cli as chaos_cli
from bench.scenarios import (
    broadcast,
    capacity,
    chat,
    fanout,
    flood,
    hosts,
    idle,
    ingress,
    reliable,
    saturation,
    shards,
    unicast,
)
from bench.scenarios.common import setting
from bench.servers import Missing

SCENARIOS: dict[str, ModuleType] = {
    "capacity": capacity,
    "fanout": fanout,
    "unicast": unicast,
    "broadcast": broadcast,
    "ingress": ingress,
    "idle": idle,
    "flood": flood,
    "reliable": reliable,
    "chat": chat,
    "hosts": hosts,
    "shards": shards,
    "saturation": saturation,
}


def workers_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of worker counts, e.g. 1,2")
    return values


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = top.add_subparsers(dest="scenario", required=True)
    for name, module in SCENARIOS.items():
        p = sub.add_parser(
            name, help=(module.__doc__ or "").strip().splitlines()[0], description=module.__doc__
        )
        p.add_argument("--workers", type=workers_list, default=[1, 2], help="worker counts to run (1,2)")
        p.add_argument("--size", type=int, default=32, help="push body bytes (at least 20)")
        p.add_argument("--room-mode", choices=["adaptive", "fixed"], help="[room] mode (default: mpim's)")
        p.add_argument("--batch", type=int, help="[room] batch (default: mpim's)")
        p.add_argument("--batch-delay", type=float, help="[room] batch_delay, seconds (default: mpim's)")
        p.add_argument("--max-delay", type=float, help="[room] max_delay, seconds (default: mpim's)")
        p.add_argument("--warm-seconds", type=float, default=1.0, help="publishing before measuring")
        p.add_argument("--deadline", type=float, default=900, help="generators exit after this long")
        p.add_argument("--profile", default="", help='py-spy a server process while measuring ("worker 1")')
        p.add_argument("--native", action="store_true", help="--profile with C frames (py-spy --native)")
        p.add_argument(
            "--server-root",
            default="",
            help="run the mpim package of another checkout (A/B of a server change)",
        )
        p.add_argument(
            "--set",
            type=setting,
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="an mpim config value for this run (TOML syntax; repeatable), e.g. inbox.group_window=0.002",
        )
        p.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
        module.add_arguments(p)
    chaos = sub.add_parser(
        "chaos",
        help="faults while a workload runs; every operation recorded and the history checked",
        description=chaos_cli.__doc__,
    )
    chaos_cli.add_arguments(chaos)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.scenario == "chaos":
        return chaos_cli.main(args)
    module = SCENARIOS[args.scenario]
    run: Callable[[Any], Coroutine[Any, Any, str]] = module.run
    try:
        text: str = uvloop.run(run(args))
    except (Missing, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(text)
    if args.record:
        module.record(args, text)
        print("appended to bench/RESULTS.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
