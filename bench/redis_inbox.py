"""``python -m bench.redis_inbox``: CPU per 1,000 appends of the Redis inbox, beside SQLite.

The same closed loop as bench/inbox_write.py (its ``fill`` and ``measure``): per loop turn
`batch` concurrent ``append`` calls of one message each, mids cycling over ``--users``
users whose inboxes were first filled to ``--max-count`` (so every append also trims one).
For RedisInbox the benchmark starts its own ``redis-server`` on a free port (no
persistence, or AOF with ``appendfsync everysec`` for "redis-aof"), and reads two CPU
figures: this process (``time.process_time()``: the store's Python side, redis-py and
hiredis, and the driver) and the Redis server (utime + stime from /proc/<pid>/stat). The
SQLite row is the embedded store in the same run (all its work is in this process).
``--record`` appends the table to bench/RESULTS.md ("Redis inbox write cost").
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import redis
import uvloop

from bench.inbox_write import fill, measure
from bench.procs import cpu_seconds
from bench.report import append_record, fmt, table
from mpim.cluster import redis_client
from mpim.config import ClusterSection
from mpim.inbox import Inbox, InboxLimits, SqliteInbox
from mpim.inbox.redis import RedisInbox

HEADING = "## Redis inbox write cost"
STORES = {"redis": "RedisInbox, no persistence", "redis-aof": "RedisInbox, AOF everysec", "sqlite": ""}


@contextlib.contextmanager
def redis_server(workdir: Path, aof: bool) -> Iterator[tuple[str, int]]:
    """A redis-server of the benchmark's own: (url, pid)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", ""]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec"] if aof else ["--appendonly", "no"]
    proc = subprocess.Popen([*argv, "--logfile", str(workdir / "redis.log")], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=port, socket_timeout=1.0) as conn:
                    conn.ping()
                break
            except redis.RedisError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"redis-server did not start; see {workdir / 'redis.log'}") from None
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


async def open_store(name: str, url: str, scratch: Path, limits: InboxLimits) -> Inbox:
    if name == "sqlite":
        return SqliteInbox(scratch / f"inbox-{time.monotonic_ns()}.sqlite3", limits, durability="process")
    client = redis_client(ClusterSection(redis=url, timeout=5.0))
    return await RedisInbox.open(client, limits, timeout=5.0, owns_client=True)


async def one(
    name: str, batch: int, args: argparse.Namespace, url: str, pid: int, scratch: Path
) -> list[object]:
    limits = InboxLimits(max_count=args.max_count)
    store = await open_store(name, url, scratch, limits)
    body = b"m" * args.size
    try:
        await fill(store, args.users, args.max_count, body)
        server0 = cpu_seconds(pid) if pid else 0.0
        sent, cpu, wall = await measure(store, batch, args.seconds, args.users, body)
        server = cpu_seconds(pid) - server0 if pid else 0.0
    finally:
        await store.close()
    ms = 1e6 / sent  # CPU seconds -> ms per 1,000 appends
    label = STORES[name] or "SqliteInbox, process"
    redis_ms = server * ms if pid else math.nan  # "-": the embedded store has no server
    return [label, batch, cpu * ms, redis_ms, (cpu + server) * ms, sent / wall]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bench.redis_inbox", description=__doc__)
    top.add_argument("--seconds", type=float, default=5.0, help="measured time per row")
    top.add_argument("--batches", default="1,10,100", help="appends per loop turn, comma-separated")
    top.add_argument("--stores", default=",".join(STORES), help="comma-separated: " + ", ".join(STORES))
    top.add_argument("--users", type=int, default=10_000, help="mids the appends cycle over")
    top.add_argument("--max-count", type=int, default=20, help="inbox limit per user (filled first)")
    top.add_argument("--size", type=int, default=100, help="message body bytes")
    top.add_argument("--record", action="store_true", help="append the table to bench/RESULTS.md")
    return top


def record(text: str, args: argparse.Namespace, version: str) -> None:
    append_record(
        HEADING,
        "bench.redis_inbox",
        f"{args.users:,} users, inbox limit {args.max_count} (filled first, so each append also drops "
        f"one), {args.size}-byte bodies, {args.seconds:g} s per row, uvloop. Client CPU = process time "
        "of the benchmark process; Redis CPU = utime + stime of its redis-server (same machine, "
        "loopback TCP).",
        text,
        stamp=f" (2 vCPU VM shared with other engineers' runs) · {version}",
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    names = [n for n in args.stores.split(",") if n]
    unknown = [n for n in names if n not in STORES]
    if unknown:
        parser().error(f"unknown store {', '.join(unknown)} (known: {', '.join(STORES)})")
    batches = [int(b) for b in args.batches.split(",") if b]
    header = [
        "store",
        "appends / loop turn",
        "client CPU ms / 1,000 appends",
        "Redis CPU ms / 1,000 appends",
        "total CPU ms / 1,000 appends",
        "appends / s",
    ]
    rows: list[list[object]] = []
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False)
    with tempfile.TemporaryDirectory(prefix="redis-inbox-bench-") as scratch:
        for name in names:
            workdir = Path(scratch) / name
            workdir.mkdir()
            with contextlib.ExitStack() as stack:
                url, pid = "", 0
                if name != "sqlite":
                    url, pid = stack.enter_context(redis_server(workdir, aof=name == "redis-aof"))
                for batch in batches:
                    if url:
                        with redis.Redis.from_url(url) as conn:
                            conn.flushall()
                    row = uvloop.run(one(name, batch, args, url, pid, workdir))
                    print(" | ".join(fmt(c) for c in row), file=sys.stderr, flush=True)
                    rows.append(row)
    text = table(header, rows)
    print(text)
    if args.record:
        record(text, args, version.stdout.split(" sha")[0].strip() or "redis-server")


if __name__ == "__main__":
    main()
