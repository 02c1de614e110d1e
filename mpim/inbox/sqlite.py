"""The embedded durable inbox: one SQLite file in WAL mode, written once per loop turn
(or, while writes keep arriving, once per group window).

How this works. ``append`` and ``ack`` put an op on a list and wait on a future; the
first op of a group schedules the end of its loop turn with ``loop.call_soon``, so every
op issued in that turn (by any number of tasks) lands in ONE transaction
(:func:`write_batch`), and what arrives while it commits forms the next group. Group
commit (:mod:`mpim.inbox.group`): a group waits for the rest of ``group_window`` after
the last commit only when the writes measured during earlier waits say more will come
before it ends, so that the ops of several turns share the transaction (and the
router's live pushes that follow it share one link write per worker); a lone write
with nothing else on its way, such as a backend's that waits for each answer, commits
in its own turn. Only after ``COMMIT`` do the futures
resolve: an append that returned is in the file. The
SQL runs on the loop thread: a writer thread cost more CPU per append than it saved
(bench/inbox_write.py, bench/RESULTS.md "Inbox write cost"). Copying the log back into
the file (checkpoints) does not: it runs on a thread of its own
(:mod:`mpim.inbox.checkpoint`). Reads are indexed queries of the committed state.

Durability. ``durability="process"`` (the default) is WAL with ``synchronous=NORMAL``:
a commit is in the operating system's page cache before the future resolves, so
killing any process (kill -9, a crash) loses nothing the inbox accepted; a power loss or
kernel crash may lose the last commits (the file stays consistent). ``"power"`` is
``synchronous=FULL``: every commit waits for fsync of the WAL and survives power loss,
at the price of one disk flush per loop turn.

Schema (version 3): ``inbox_meta`` (schema version, the store epoch, drawn when the
file is created, and the slot count the users were placed with, :data:`mpim.slots.SLOTS`:
written at creation, added to a file that has none, a file with another count refused),
``messages`` keyed (mid, seq) with an index on the append time for
trimming by age, ``users`` (mid -> epoch and a floor for the last seq and the trimmed
watermark; written only when a seq wraps or a trim by age empties a stream, never
deleted, so seqs never go back: the rest comes from the user's messages, see
:mod:`mpim.inbox.sqlwrite`), ``cursors`` keyed (mid, device) with the last-seen time,
``chats`` keyed (sender, message id) with the positions the message got and the end of
its de-duplication window (indexed, for trimming), written in the message's transaction.
Versions 1 (every append rewrote the user's row) and 2 (no ``chats``) are read as is and
upgraded in place; an upgraded file is refused by the older code. A corrupt or foreign file
is an InboxError naming it.

Several processes (the router shards of a host) may open the file at once: WAL lets them
read while one writes, and a busy timeout makes a writer wait for another's transaction
instead of failing. The writer's :class:`~mpim.inbox.sqlwrite.UserCache` (each user's
epoch, last seq and trimmed watermark) is only right if ONE process appends to, acks and
wraps a given user: the shard that owns it. A trim by age from another process is safe
(it never lowers a seq; a stale trimmed watermark in the cache only repeats a delete).

Reads apply the limits themselves (:mod:`mpim.inbox.base`): the messages query skips
those appended before ``now - max_age``, and the newest ``max_count`` bound the range, so
a read between two trims, or after ``max_count`` was lowered, is what it would be after one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence

from mpim.inbox.base import (
    Chatted,
    InboxError,
    InboxLimits,
    Item,
    Message,
    Page,
    Position,
    check_ack,
    check_chat,
    check_items,
    check_mid,
    check_read,
    check_text,
    new_epoch,
    page_complete,
    read_floor,
)
from mpim.inbox.checkpoint import Checkpointer
from mpim.inbox.group import GroupCommit
from mpim.inbox.sqlwrite import (
    AckOp,
    AppendOp,
    ChatId,
    Op,
    Result,
    UserCache,
    find_chat,
    read_user,
    write_batch,
)
from mpim.slots import SLOTS

log = logging.getLogger(__name__)

SCHEMA_VERSION = "3"
UPGRADES = {"1": "3", "2": "3"}  # an older schema this code reads as is: the version it becomes
DURABILITY = {"process": "NORMAL", "power": "FULL"}
BUSY_TIMEOUT_MS = 2000  # a writer waits this long for another process's transaction
CHECKPOINT_EVERY = 2000  # messages and acks committed between two checkpoints (on their own thread)
TRIM_CHUNK = 2000  # messages per trim transaction; the loop runs other work between chunks

_SCHEMA = (
    "CREATE TABLE inbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    # the user's epoch; seq and trimmed are floors: the last seq given out is at least seq, every
    # seq <= trimmed is gone (the user's messages give the exact range; sqlwrite.read_user)
    "CREATE TABLE users (mid INTEGER PRIMARY KEY, epoch TEXT NOT NULL, seq INTEGER NOT NULL,"
    " trimmed INTEGER NOT NULL)",
    "CREATE TABLE messages (mid INTEGER NOT NULL, seq INTEGER NOT NULL, op INTEGER NOT NULL,"
    " body BLOB NOT NULL, at REAL NOT NULL, sender INTEGER NOT NULL, PRIMARY KEY (mid, seq)) WITHOUT ROWID",
    "CREATE INDEX messages_at ON messages (at)",
    "CREATE TABLE cursors (mid INTEGER NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL,"
    " seen REAL NOT NULL, PRIMARY KEY (mid, device)) WITHOUT ROWID",
)
# version 3: private chat ids, each with the positions its message got, until its window ends
_CHATS = (
    "CREATE TABLE chats (sender INTEGER NOT NULL, id TEXT NOT NULL, until REAL NOT NULL,"
    " positions TEXT NOT NULL, PRIMARY KEY (sender, id)) WITHOUT ROWID",
    "CREATE INDEX chats_until ON chats (until)",
)

_READ = (
    "SELECT seq, op, body, at, sender FROM messages WHERE mid = ? AND seq > ? AND at >= ?"
    " ORDER BY seq LIMIT ?"
)
_TRIM_CHATS = (
    "DELETE FROM chats WHERE (sender, id) IN"
    " (SELECT sender, id FROM chats WHERE until < ? ORDER BY until LIMIT ?)"
)
# a trim by age may remove every message of a user: the row keeps the floor (no row: the store's epoch)
_TRIM_USER = (
    "INSERT INTO users (mid, epoch, seq, trimmed) VALUES (?, ?, ?, ?) ON CONFLICT (mid) DO UPDATE"
    " SET seq = MAX(seq, excluded.seq), trimmed = MAX(trimmed, excluded.trimmed)"
)
_TRIM_SELECT = (
    "SELECT mid, MAX(seq), COUNT(*) FROM"
    " (SELECT mid, seq FROM messages WHERE at < ? ORDER BY at LIMIT ?) GROUP BY mid"
)


def connect(path: str, durability: str) -> tuple[sqlite3.Connection, str]:
    """Open (or create) the inbox file; returns the connection and the store epoch.

    Router shards open one file at the same moment: SQLite answers "database is locked"
    without waiting when two connections switch a new file to WAL (or create its tables) at
    once, so the opening is tried again for up to the busy timeout."""
    if durability not in DURABILITY:
        raise ValueError(f"durability must be one of {', '.join(DURABILITY)}, got {durability!r}")
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return _connect(path, durability)
        except _Locked:
            if time.monotonic() >= deadline:
                raise InboxError(f"inbox {path}: cannot open: the database stayed locked") from None
            time.sleep(0.01)


class _Locked(Exception):
    """Another process held the file while it was being opened (try again)."""


def _connect(path: str, durability: str) -> tuple[sqlite3.Connection, str]:
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # (first: another shard may be creating the file or switching it to WAL right now)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal" and path != ":memory:":
            raise InboxError(f"inbox {path}: SQLite cannot use WAL mode here (journal mode {mode})")
        conn.execute(f"PRAGMA synchronous = {DURABILITY[durability]}")
        epoch = _schema(conn, path)
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            raise _Locked from None
        raise InboxError(
            f"inbox {path}: cannot open: {exc} (a corrupt or foreign file? move it away to start empty)"
        ) from None
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    return conn, epoch


def _schema(conn: sqlite3.Connection, path: str) -> str:
    conn.execute("BEGIN IMMEDIATE")
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            for statement in _SCHEMA + _CHATS:
                conn.execute(statement)
            epoch = new_epoch()
            conn.executemany(
                "INSERT INTO inbox_meta (key, value) VALUES (?, ?)",
                [("schema", SCHEMA_VERSION), ("epoch", epoch), ("slots", str(SLOTS))],
            )
            log.info("inbox %s: created, epoch %s", path, epoch)
        elif "inbox_meta" not in tables:
            raise InboxError(f"inbox {path}: an SQLite database but not an mpim inbox")
        else:
            meta = dict(conn.execute("SELECT key, value FROM inbox_meta").fetchall())
            version = meta.get("schema")
            if version in UPGRADES and "epoch" in meta:
                for statement in _CHATS:  # (1 -> 2 changed how rows are used, not the tables)
                    conn.execute(statement)
                conn.execute("UPDATE inbox_meta SET value = ? WHERE key = 'schema'", (UPGRADES[version],))
                log.info("inbox %s: schema %s upgraded to %s", path, version, UPGRADES[version])
            elif version != SCHEMA_VERSION or "epoch" not in meta:
                raise InboxError(f"inbox {path}: unknown schema version {version!r}")
            _check_slots(conn, path, meta.get("slots"))  # (an upgraded file too)
            epoch = meta["epoch"]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return epoch


def _check_slots(conn: sqlite3.Connection, path: str, recorded: str | None) -> None:
    """The file's slot count is this code's (:data:`mpim.slots.SLOTS`); a file without one gets it."""
    if recorded is None:
        conn.execute("INSERT INTO inbox_meta (key, value) VALUES ('slots', ?)", (str(SLOTS),))
        log.info("inbox %s: records its slot count (%d)", path, SLOTS)
    elif recorded != str(SLOTS):
        raise InboxError(
            f"inbox {path}: made with {recorded} slots, this mpim places users in {SLOTS}:"
            " its users would be owned by the wrong router shards; use an mpim with the same slot count"
            " or move the file away to start empty"
        )


@contextlib.contextmanager
def _failures(path: str, what: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise InboxError(f"inbox {path}: {what} failed: {exc}") from exc


class SqliteInbox:
    """:class:`~mpim.inbox.base.Inbox` in an SQLite file (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        limits: InboxLimits,
        clock: Callable[[], float] = time.time,
        *,
        durability: str = "process",
        group_window: float = 0.0,
        checkpoint_every: int = CHECKPOINT_EVERY,
        shared: bool = False,
    ) -> None:
        """``shared``: other processes (router shards) may append to the same users."""
        self.path = os.fspath(path)
        self._limits = limits
        self._clock = clock
        self._conn, self._epoch = connect(self.path, durability)
        self._checkpointer: Checkpointer | None = None
        if checkpoint_every > 0 and self.path != ":memory:":  # (else SQLite checkpoints in COMMIT)
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._checkpointer = Checkpointer(
                self.path, DURABILITY[durability], checkpoint_every, self._finish_checkpoint
            )
        self._pending: list[tuple[Op, asyncio.Future[Result]]] = []
        self._closed = False
        self._group = GroupCommit(group_window)
        self._timer: asyncio.TimerHandle | None = None  # a waiting group's commit
        self._loop: asyncio.AbstractEventLoop | None = None
        # the committed users rows: no read per append. Shared by router shards, a user is
        # appended to by its owner but for the other copy of a private message: a batch that
        # meets a seq another process wrote is rolled back, and written again after a fresh read.
        self._users = UserCache()
        self._shared = shared
        self._counts = {"commits": 0, "writes": 0}
        log.info("inbox %s: open (durability %s, epoch %s)", self.path, durability, self._epoch)

    @property
    def stats(self) -> dict[str, int]:
        """Commits, the writes in them and the commits that waited (group commit); checkpoints run
        and failed (for /mpim/stats, /metrics)."""
        out = dict(self._counts)
        out["waits"] = self._group.waits
        if self._checkpointer is not None:
            out["checkpoints"] = self._checkpointer.stats["checkpoints"]
            out["checkpoint_failures"] = self._checkpointer.stats["failed"]
        return out

    def _finish_checkpoint(self) -> None:
        if not self._closed:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def _check_open(self) -> None:
        if self._closed:
            raise InboxError(f"inbox {self.path}: closed")

    # -- writes: batched per loop turn, or per group window while more are on their way -------

    @property
    def group_window(self) -> float:
        return self._group.window

    @group_window.setter
    def group_window(self, window: float) -> None:
        self._group.window = window

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the writes run on, kept: on CPython 3.11 every ``asyncio.get_running_loop()``
        is a ``getpid`` system call (its fork check)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _submit(self, op: Op) -> asyncio.Future[Result]:
        """Queue a write. It joins the pending group; the first write of a group schedules the end
        of this loop turn (:meth:`_turn_end`), which commits the group or lets it wait."""
        loop = self._running_loop()
        fut: asyncio.Future[Result] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._turn_end)
        self._pending.append((op, fut))
        return fut

    def _turn_end(self) -> None:
        """The end of the loop turn a group began in: commit it now, or wait for the window's end
        when writes are measured to be on their way (:class:`~mpim.inbox.group.GroupCommit`)."""
        loop = self._loop
        if not self._pending or self._timer is not None or loop is None:
            return  # (committed already by close() or a test hook, or already waiting)
        delay = self._group.delay(loop.time(), len(self._pending))
        if delay > 0:
            self._timer = loop.call_later(delay, self._flush)
        else:
            self._flush()

    def _flush(self) -> None:
        """Commit every pending write now, in one transaction."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        loop = self._loop if self._loop is not None and not self._loop.is_closed() else None
        if loop is not None:  # (close() may flush without a loop)
            self._group.committed(loop.time(), len(pending))
        self._counts["commits"] += 1
        self._counts["writes"] += len(pending)
        ops = [op for op, _ in pending]
        if self._shared:  # (an ack is clamped to the user's top: the file's, not a cached one)
            self._users.drop(op.mid for op in ops if isinstance(op, AckOp))
        try:
            try:
                results = write_batch(self._conn, ops, self._limits, self._epoch, self._clock(), self._users)
            except sqlite3.IntegrityError:
                if not self._shared:
                    raise
                # another process (a router shard's private message) wrote one of these users
                # since they were cached: the batch was rolled back; read them again
                self._users.rows.clear()
                results = write_batch(self._conn, ops, self._limits, self._epoch, self._clock(), self._users)
        except Exception as exc:  # whatever it is, every caller of the batch hears of it
            self._fail(pending, exc)
        else:
            self._resolve(pending, results)
            if self._checkpointer is not None and loop is not None:
                written = sum(len(op.items) if isinstance(op, AppendOp) else 1 for op, _ in pending)
                self._checkpointer.wrote(loop, written)

    def _resolve(self, pending: Sequence[tuple[Op, asyncio.Future[Result]]], results: list[Result]) -> None:
        for (_, fut), result in zip(pending, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    def _fail(self, pending: Sequence[tuple[Op, asyncio.Future[Result]]], exc: BaseException) -> None:
        log.error("inbox %s: write of %d ops failed: %s", self.path, len(pending), exc)
        for _, fut in pending:
            if not fut.done():
                fut.set_exception(InboxError(f"inbox {self.path}: write failed: {exc}"))

    async def append(self, items: Sequence[Item]) -> list[Position]:
        return await self.append_soon(items)

    def append_soon(self, items: Sequence[Item]) -> asyncio.Future[list[Position]]:
        """:meth:`append` as a future, without a coroutine (the router's push path); bad items
        and a closed store raise here, at once."""
        self._check_open()
        check_items(items)
        if not items:
            fut: asyncio.Future[list[Position]] = self._running_loop().create_future()
            fut.set_result([])
            return fut
        return self._submit(AppendOp(tuple(items)))  # type: ignore[return-value]  # (an append: positions)

    async def append_chat(self, sender: int, msg_id: str, items: Sequence[Item], window: float) -> Chatted:
        self._check_open()
        check_chat(sender, msg_id, items, window)
        result = await self._submit(AppendOp(tuple(items), ChatId(sender, msg_id, window)))
        assert isinstance(result, Chatted)
        return result

    async def ack(self, mid: int, device: str, seq: int) -> int:
        self._check_open()
        check_ack(mid, device, seq)
        result = await self._submit(AckOp(mid, device, seq))
        assert isinstance(result, int)
        return result

    # -- reads: the committed state ---------------------------------------------------

    def _user(self, mid: int) -> tuple[str, int, int]:
        return read_user(self._conn, mid, self._epoch)

    async def read(self, mid: int, after: int, limit: int) -> Page:
        self._check_open()
        check_read(mid, after, limit)
        cutoff = self._clock() - self._limits.max_age
        with _failures(self.path, "read"):
            epoch, seq, trimmed = self._user(mid)
            floor = read_floor(trimmed, seq, self._limits)
            rows = self._conn.execute(_READ, (mid, max(after, floor), cutoff, max(limit, 1))).fetchall()
        complete = page_complete(after, floor, seq, limit, [row[0] for row in rows])
        return Page([Message._make(row) for row in rows[:limit]], Position(epoch, seq), complete)

    async def find_chat(self, sender: int, msg_id: str) -> list[Position] | None:
        self._check_open()
        check_mid(sender)
        check_text("chat id", msg_id)
        with _failures(self.path, "read"):
            return find_chat(self._conn, (sender, msg_id), self._clock())

    async def top(self, mid: int) -> Position:
        self._check_open()
        check_mid(mid)
        with _failures(self.path, "read"):
            epoch, seq, _ = self._user(mid)
        return Position(epoch, seq)

    async def cursors(self, mid: int) -> dict[str, int]:
        self._check_open()
        check_mid(mid)
        with _failures(self.path, "read"):
            rows = self._conn.execute("SELECT device, seq FROM cursors WHERE mid = ?", (mid,)).fetchall()
        return dict(rows)

    # -- maintenance ------------------------------------------------------------------

    async def trim(self, now: float) -> int:
        """Drop by age in chunks of TRIM_CHUNK messages, letting the loop run in between."""
        cutoff = now - self._limits.max_age
        dropped = 0
        while True:
            self._check_open()
            with _failures(self.path, "trim"):
                count, more = self._trim_chunk(cutoff)
            dropped += count
            if not more:
                break
            await asyncio.sleep(0)
        with _failures(self.path, "trim"):
            self._conn.execute("DELETE FROM cursors WHERE seen < ?", (cutoff,))
        while True:  # chat ids whose window is over (each chunk its own transaction)
            self._check_open()
            with _failures(self.path, "trim"):
                gone = self._conn.execute(_TRIM_CHATS, (now, TRIM_CHUNK)).rowcount
            if gone < TRIM_CHUNK:
                break
            await asyncio.sleep(0)
        if dropped:
            log.debug(
                "inbox %s: trimmed %d messages older than %.0f s", self.path, dropped, self._limits.max_age
            )
        return dropped

    def _trim_chunk(self, cutoff: float) -> tuple[int, bool]:
        """Drop the oldest messages up to TRIM_CHUNK; per user always a prefix of the stream."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            users = conn.execute(_TRIM_SELECT, (cutoff, TRIM_CHUNK)).fetchall()
            marks = [(mid, seq) for mid, seq, _ in users]
            cur = conn.executemany("DELETE FROM messages WHERE mid = ? AND seq <= ?", marks)
            dropped = cur.rowcount
            conn.executemany(_TRIM_USER, [(mid, self._epoch, seq, seq) for mid, seq in marks])
            self._users.drop(mid for mid, _ in marks)  # (before COMMIT: read again either way)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return dropped, sum(count for _, _, count in users) >= TRIM_CHUNK

    async def close(self) -> None:
        """Commit what is pending, then close the file; later calls raise InboxError."""
        if self._closed:
            return
        self._flush()
        self._closed = True
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._conn.close()  # (the last connection: SQLite copies the log in and removes it)

    async def force_seq(self, mid: int, seq: int) -> None:
        """Test only (see :class:`~mpim.inbox.base.InboxTestHooks`): empty stream at `seq`."""
        self._flush()
        self._users.drop([mid])
        epoch, _, _ = self._user(mid)
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.execute("DELETE FROM messages WHERE mid = ?", (mid,))
        self._conn.execute(
            "INSERT OR REPLACE INTO users (mid, epoch, seq, trimmed) VALUES (?, ?, ?, ?)",
            (mid, epoch, seq, seq),
        )
        self._conn.execute("COMMIT")
