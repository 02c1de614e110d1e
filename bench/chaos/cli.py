"""``python -m bench chaos``: the options, and the exit code (0 valid, 1 violations, 2 the
harness itself failed). The last line printed is the verdict."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.chaos.checker import PENDING_FLAGS, check
from bench.chaos.history import load
from bench.chaos.nemesis import applicable
from bench.chaos.report import verdict
from bench.chaos.run import Options, run
from bench.servers import ROOT


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hosts", type=int, choices=(1, 2), default=1, help="1, or 2 masters on one redis-server")
    p.add_argument("--shards", type=int, default=1, help="[router] shards per host (1)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of workload and faults (60)")
    p.add_argument("--seed", type=int, default=1, help="the random seed of the workload and the nemesis")
    p.add_argument(
        "--nemesis",
        default="",
        help="comma-separated faults (default: all that apply; 'none' for none): " + ", ".join(applicable(2)),
    )
    p.add_argument("--server-root", default="", help="run the mpim package of another checkout")
    p.add_argument("--out", default="", help="directory for history.jsonl, summary.json/.txt, chaos.png")
    p.add_argument("--rate", type=float, default=30.0, help="backend pushes per second (30)")
    p.add_argument("--upstream-ack", choices=("only", "rigor", "none"), default="only", help="[upstream] ack")
    p.add_argument(
        "--known-pending",
        default="",
        help="comma-separated open issues whose checks are reported apart, not failed: "
        + ", ".join(PENDING_FLAGS),
    )
    p.add_argument("--check", default="", metavar="HISTORY", help="only check an existing history.jsonl")
    p.add_argument("--keep", action="store_true", help="keep the servers' directory (logs, inbox)")


def options(args: Any) -> Options:
    names = applicable(args.hosts)
    if args.nemesis == "none":
        chosen: list[str] = []
    elif args.nemesis:
        chosen = [n.strip() for n in args.nemesis.split(",") if n.strip()]
        wrong = [n for n in chosen if n not in names]
        if wrong:
            raise ValueError(
                f"--nemesis: {', '.join(wrong)} do not apply to {args.hosts} host(s): {', '.join(names)}"
            )
    else:
        chosen = list(names)
    if args.shards < 1:
        raise ValueError("--shards: at least 1")
    root = Path(args.server_root).resolve() if args.server_root else ROOT
    if not (root / "mpim").is_dir():
        raise ValueError(f"--server-root: {root} holds no mpim package")
    out = Path(args.out) if args.out else Path(tempfile.gettempdir()) / f"mpim-chaos-{int(time.time())}"
    return Options(
        hosts=args.hosts,
        duration=args.duration,
        seed=args.seed,
        nemesis=chosen,
        server_root=root,
        out=out,
        rate=args.rate,
        upstream_ack=args.upstream_ack,
        known_pending=pending(args.known_pending),
        shards=args.shards,
    )


def pending(text: str) -> list[int]:
    flags = [f.strip() for f in text.split(",") if f.strip()]
    wrong = [f for f in flags if f not in PENDING_FLAGS]
    if wrong:
        raise ValueError(f"--known-pending: unknown {', '.join(wrong)} (known: {', '.join(PENDING_FLAGS)})")
    return [PENDING_FLAGS[f] for f in flags]


def main(args: Any) -> int:
    try:
        if args.check:
            result = check(load(Path(args.check)), pending(args.known_pending))
            print(result.text() or "no violations")
            line = verdict(result, result.stats.get("faults", 0))
            print(line)
            return 0 if result.valid else 1
        opts = options(args)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        report, line, tmp = uvloop.run(asyncio.wait_for(run(opts), opts.duration + 420))
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"error: the harness failed: {exc or type(exc).__name__}; partial history in {opts.out}")
        return 2
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print((opts.out / "summary.txt").read_text().rstrip())
    print(f"history, summary and chaos.png in {opts.out}")
    print(line)
    return 0 if report.valid else 1
