"""Child of the shared-file test: one router shard's appends to an SQLite inbox shared with others.

``python shard_writer.py PATH SHARD COUNT GO`` waits for the file GO to exist (so that the
shards open a fresh inbox at the same moment), opens PATH, appends COUNT messages to the
users ``SHARD * 1000 + 1 .. + USERS`` (several per loop turn), acks some, and exits 0 once
every append returned; any error exits non-zero.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import uvloop

from mpim.inbox import InboxLimits, SqliteInbox

USERS = 5
TURN = 8  # appends issued per loop turn


def users(shard: int) -> list[int]:
    return [shard * 1000 + 1 + i for i in range(USERS)]


async def main(path: str, shard: int, count: int, go: str) -> None:
    while not os.path.exists(go):
        time.sleep(0.001)
    inbox = SqliteInbox(path, InboxLimits(max_count=1_000_000), checkpoint_every=50)
    mids = users(shard)
    n = 0
    while n < count:
        items = [(mids[i % USERS], 1000, b"%d" % i, 0) for i in range(n, min(count, n + TURN))]
        n += len(items)
        await asyncio.gather(*(inbox.append([item]) for item in items))
        await inbox.ack(mids[n % USERS], "d", 1)
    await inbox.close()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
