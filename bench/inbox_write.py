"""``python -m bench.inbox_write``: CPU time per appended message of the inbox stores.

Each store runs a closed loop on uvloop: per loop turn it issues `batch` concurrent
``append`` calls of one message each (``asyncio.gather``), waits for them, and goes on
for ``--seconds``. Mids cycle over ``--users`` users whose inboxes are first filled to
``--max-count``, so every measured append also drops that user's oldest message (the
steady state of a long-running server). CPU is ``time.process_time()`` of this process
(every thread), so the figure includes the driver's own coroutines; the memory store's
row is that floor. "writer thread" is the SQLite store with each batch's SQL run on one
worker thread with its own connection: the alternative the store's design was measured
against. ``--record`` appends the table to bench/RESULTS.md ("Inbox write cost").
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvloop

from bench.report import append_record, fmt, table
from mpim.inbox import Inbox, InboxLimits, MemoryInbox, SqliteInbox
from mpim.inbox.sqlite import connect
from mpim.inbox.sqlwrite import Op, Result, write_batch

HEADING = "## Inbox write cost"
OP = 1000


class ThreadedSqliteInbox(SqliteInbox):
    """SqliteInbox whose batches are written on a writer thread (the rejected alternative)."""

    def __init__(self, path: Path, limits: InboxLimits, *, durability: str) -> None:
        super().__init__(path, limits, durability=durability)
        self._durability = durability
        self._executor = ThreadPoolExecutor(1, "inbox-writer")
        self._writer: sqlite3.Connection | None = None  # opened and used on the writer thread

    def _write(self, ops: Sequence[Op], now: float) -> list[Result]:
        if self._writer is None:
            self._writer, _ = connect(self.path, self._durability)
        return write_batch(self._writer, ops, self._limits, self._epoch, now)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        done = asyncio.get_running_loop().run_in_executor(
            self._executor, self._write, [op for op, _ in pending], self._clock()
        )

        def settle(fut: asyncio.Future[list[Result]]) -> None:
            exc = fut.exception()
            if exc is None:
                self._resolve(pending, fut.result())
            else:
                self._fail(pending, exc)

        done.add_done_callback(settle)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_writer)
        self._executor.shutdown()
        await super().close()


Opener = Callable[[Path, InboxLimits], Inbox]

STORES: dict[str, tuple[str, Opener]] = {
    "sqlite": ("SqliteInbox, process", lambda p, lim: SqliteInbox(p, lim, durability="process")),
    "sqlite-thread": (
        "SqliteInbox, process, writer thread",
        lambda p, lim: ThreadedSqliteInbox(p, lim, durability="process"),
    ),
    "sqlite-power": ("SqliteInbox, power", lambda p, lim: SqliteInbox(p, lim, durability="power")),
    "memory": ("MemoryInbox", lambda p, lim: MemoryInbox(lim)),
}


async def fill(store: Inbox, users: int, count: int, body: bytes) -> None:
    """Every user's inbox filled to max_count, in large appends."""
    items = [(mid, OP, body, 0) for _ in range(count) for mid in range(1, users + 1)]
    for start in range(0, len(items), 5000):
        await store.append(items[start : start + 5000])


async def measure(
    store: Inbox, batch: int, seconds: float, users: int, body: bytes
) -> tuple[int, float, float]:
    """Closed loop of `batch` appends per loop turn; (messages, CPU s, wall s)."""
    mid = 0
    sent = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    deadline = wall0 + seconds
    while time.perf_counter() < deadline:
        calls = []
        for _ in range(batch):
            mid = mid % users + 1
            calls.append(store.append([(mid, OP, body, 0)]))
        await asyncio.gather(*calls)
        sent += batch
    return sent, time.process_time() - cpu0, time.perf_counter() - wall0


async def one(name: str, batch: int, args: argparse.Namespace, scratch: Path) -> list[object]:
    path = scratch / f"inbox-{len(list(scratch.iterdir()))}.sqlite3"
    limits = InboxLimits(max_count=args.max_count)
    label, opener = STORES[name]
    store = opener(path, limits)
    body = b"m" * args.size
    try:
        await fill(store, args.users, args.max_count, body)
        sent, cpu, wall = await measure(store, batch, args.seconds, args.users, body)
    finally:
        await store.close()
    return [label, batch, cpu / sent * 1e6, sent / wall, sent / cpu, f"{cpu / wall:.0%}"]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bench.inbox_write", description=__doc__)
    top.add_argument("--seconds", type=float, default=5.0, help="measured time per row")
    top.add_argument("--batches", default="1,10,100", help="appends per loop turn, comma-separated")
    top.add_argument("--stores", default=",".join(STORES), help="comma-separated: " + ", ".join(STORES))
    top.add_argument("--users", type=int, default=10_000, help="mids the appends cycle over")
    top.add_argument("--max-count", type=int, default=20, help="inbox limit per user (filled first)")
    top.add_argument("--size", type=int, default=100, help="message body bytes")
    top.add_argument("--dir", default=None, help="directory for the SQLite files (default: system temp)")
    top.add_argument("--record", action="store_true", help="append the table to bench/RESULTS.md")
    return top


def record(text: str, args: argparse.Namespace) -> None:
    append_record(
        HEADING,
        "bench.inbox_write",
        f"{args.users:,} users, inbox limit {args.max_count} (filled first, so each append also drops "
        f"one), {args.size}-byte bodies, {args.seconds:g} s per row, uvloop; CPU = process time of the "
        "one benchmark process.",
        text,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    names = [n for n in args.stores.split(",") if n]
    unknown = [n for n in names if n not in STORES]
    if unknown:
        parser().error(f"unknown store {', '.join(unknown)} (known: {', '.join(STORES)})")
    batches = [int(b) for b in args.batches.split(",") if b]
    header = ["store", "appends / loop turn", "µs CPU / message", "messages / s", "messages / CPU-s", "CPU"]
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="inbox-bench-") as scratch:
        for name in names:
            for batch in batches:
                row = uvloop.run(one(name, batch, args, Path(scratch)))
                print(" | ".join(fmt(c) for c in row), file=sys.stderr, flush=True)
                rows.append(row)
    text = table(header, rows)
    print(text)
    if args.record:
        record(text, args)


if __name__ == "__main__":
    main()
