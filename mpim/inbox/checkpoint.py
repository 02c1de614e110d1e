"""WAL checkpoints of the SQLite inbox on a thread of their own.

SQLite copies the write-ahead log back into the database file ("checkpoint") inside the
``COMMIT`` that takes the log past ``wal_autocheckpoint`` pages (1,000 by default): that
commit, on the event loop, then also reads the log's pages, writes them into the file and
flushes both to disk, a stall of several milliseconds every few hundred commits under load.

:class:`Checkpointer` takes that work off the loop. The writer's connection runs with
automatic checkpoints off; after a commit the store tells the checkpointer how many writes
it made, and every ``every`` writes it runs ``PRAGMA wal_checkpoint(PASSIVE)`` on one
thread with a connection of its own (SQLite releases the GIL while it works; PASSIVE never
waits for the writer, which goes on committing into the log meanwhile). A page rewritten
by many commits in between is copied once.

The log starts again from its beginning only when a write transaction finds all of it
copied; commits made while the thread copied are not, so under a steady stream of writes
the log would grow without end. When the thread is done, the loop therefore copies that
remainder itself (``finish``: a PASSIVE checkpoint on the writer's connection, no write
can run meanwhile; a few pages, those of the commits made during the thread's run), and
the next commit restarts the log: it stays near ``every`` writes long.

Durability is the writer's business and does not change: a commit is in the log before
its callers hear of it. A checkpoint that fails is logged and tried again at the next
threshold (the log keeps everything meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class Checkpointer:
    """Runs PASSIVE checkpoints of `path` on its own thread, one at a time."""

    def __init__(self, path: str, synchronous: str, every: int, finish: Callable[[], None]) -> None:
        self.path = path
        self.finish = finish  # on the loop: copy what was committed while the thread worked
        self.synchronous = synchronous
        self.every = every
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="inbox-checkpoint")
        self._conn: sqlite3.Connection | None = None  # opened, used and closed on the thread
        self._running: asyncio.Future[None] | None = None
        self._writes = 0
        self.stats = {"checkpoints": 0, "failed": 0}

    def wrote(self, loop: asyncio.AbstractEventLoop, writes: int) -> None:
        """`writes` more messages or cursors are committed; start a checkpoint when due and none runs."""
        self._writes += writes
        if self._writes < self.every or self._running is not None:
            return
        self._writes = 0
        running = self._running = loop.run_in_executor(self._executor, self._checkpoint)
        running.add_done_callback(self._done)

    def _checkpoint(self) -> None:
        conn = self._conn
        if conn is None:
            conn = self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def _done(self, running: asyncio.Future[None]) -> None:
        self._running = None
        if running.cancelled():
            return
        exc = running.exception()
        if exc is not None:
            self._failed(exc)
            return
        self.stats["checkpoints"] += 1
        try:
            self.finish()
        except sqlite3.Error as error:
            self._failed(error)

    def _failed(self, exc: BaseException) -> None:
        self.stats["failed"] += 1
        log.warning("inbox %s: checkpoint failed (the log keeps growing until one works): %s", self.path, exc)

    def close(self) -> None:
        """Wait for a running checkpoint and close the thread's connection."""
        self._executor.submit(self._close).result()
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
