"""Child of the kill -9 test: append to an SQLite inbox forever, print each committed seq.

``python kill_writer.py PATH [GROUP_WINDOW [CHECKPOINT_EVERY]]`` prints ``mid seq body`` per
appended message, only after its append returned (the message is committed), until it is killed.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

from mpim.inbox import InboxLimits, SqliteInbox


async def main(path: str, group_window: float, checkpoint_every: int) -> None:
    inbox = SqliteInbox(
        path, InboxLimits(max_count=1_000_000), group_window=group_window, checkpoint_every=checkpoint_every
    )
    n = 0
    while True:
        # several appends per loop turn, so batches shared by several callers are covered
        items = [(1 + i % 3, 1000, b"m%d" % i, 0) for i in range(n, n + 4)]
        n += len(items)
        results = await asyncio.gather(*(inbox.append([it]) for it in items))
        for (mid, _, body, _), (position,) in zip(items, results, strict=True):
            sys.stdout.write(f"{mid} {position.seq} {body.decode()}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    window = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    uvloop.run(main(sys.argv[1], window, int(sys.argv[3]) if len(sys.argv) > 3 else 2000))
