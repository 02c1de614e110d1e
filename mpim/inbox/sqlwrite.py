"""One write transaction of the SQLite inbox: a turn's appends and acks, in call order.

:func:`write_batch` reads the users (and cursors) a batch touches, assigns seqs in
Python in the order of the calls, and writes messages, count trims, counters and
cursors with one ``executemany`` per statement inside one ``BEGIN IMMEDIATE`` ..
``COMMIT``. It raises ``sqlite3.Error`` after a rollback, so either the whole batch is
in the file or none of it is. It takes a connection and no event loop, so it can run
on the loop thread or on a writer thread.

A user's state (epoch, last seq, trimmed watermark) is not rewritten per append: a
user's stored messages are always the range ``(trimmed, last]``, so both ends come from
``messages`` (:func:`read_user`: its MIN and MAX seq, two index seeks). The ``users``
row holds only what the messages cannot tell: an epoch other than the store's (after a
seq wrap) and a floor for both when a trim by age removed every message. An append
touches one page of ``messages`` instead of that and the user's row (schema 2; a
version-1 file, whose rows are exact, reads the same).

A private message is an append with a :class:`ChatId`: the batch looks the id up (in the
ids it recorded itself, then in ``chats``) and, unless it is there and its window not
over, appends the items and records the id with their positions in the same
transaction; a retry gets the first positions and appends nothing.

The single writer may keep a :class:`UserCache`: each user's committed (epoch, seq,
trimmed), so a batch reads a user's state only on a miss. It changes only after
``COMMIT`` (a rolled-back batch leaves it as it was); whoever else changes the users
table (trimming, a test hook) drops the users it touched from it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from mpim.inbox.base import (
    SEQ_MAX,
    Chatted,
    InboxLimits,
    Item,
    Position,
    clamp_ack,
    decode_positions,
    encode_positions,
    new_epoch,
)


class ChatId(NamedTuple):
    """A private message's id: an append that carries one is appended once per window."""

    sender: int
    msg_id: str
    window: float  # seconds the id is remembered


class AppendOp(NamedTuple):
    items: Sequence[Item]
    chat: ChatId | None = None  # a private message: its id, recorded with it


class AckOp(NamedTuple):
    mid: int
    device: str
    seq: int


Op = AppendOp | AckOp
Result = list[Position] | int | Chatted
UserRow = tuple[str, int, int]  # a user's committed (epoch, last seq, trimmed watermark)


class UserCache:
    """The committed users rows of the writer's recent users, at most ``size`` of them (the
    oldest entries go first); a miss costs one indexed read."""

    __slots__ = ("rows", "size")

    def __init__(self, size: int = 65536) -> None:
        self.rows: dict[int, UserRow] = {}
        self.size = size

    def committed(self, users: dict[int, _User]) -> None:
        rows = self.rows
        for mid, user in users.items():
            rows[mid] = (user.epoch, user.seq, user.trimmed)
        while len(rows) > self.size:
            del rows[next(iter(rows))]

    def drop(self, mids: Iterable[int]) -> None:
        for mid in mids:
            self.rows.pop(mid, None)


_USER_READ = (
    "SELECT u.epoch, u.seq, u.trimmed,"
    " (SELECT MIN(seq) FROM messages WHERE mid = ?1), (SELECT MAX(seq) FROM messages WHERE mid = ?1)"
    " FROM (SELECT ?1 AS mid) AS k LEFT JOIN users AS u ON u.mid = k.mid"
)


def read_user(conn: sqlite3.Connection, mid: int, store_epoch: str) -> UserRow:
    """A user's committed (epoch, last seq, trimmed watermark): the ``users`` row (if any)
    gives the epoch and a floor, the stored messages the range ``(trimmed, last]``."""
    epoch, floor, trimmed, first, last = conn.execute(_USER_READ, (mid,)).fetchone()
    if epoch is None:  # never wrapped nor emptied by age: the store's epoch, nothing below 0
        epoch, floor, trimmed = store_epoch, 0, 0
    floor = max(floor, trimmed)
    if last is None:
        return epoch, floor, floor
    return epoch, max(floor, last), max(trimmed, first - 1)


_INSERT_MESSAGE = "INSERT INTO messages (mid, seq, op, body, at, sender) VALUES (?, ?, ?, ?, ?, ?)"
_TRIM_COUNT = "DELETE FROM messages WHERE mid = ? AND seq <= ?"
_UPSERT_USER = (
    "INSERT INTO users (mid, epoch, seq, trimmed) VALUES (?, ?, ?, ?) ON CONFLICT (mid) DO UPDATE"
    " SET epoch = excluded.epoch, seq = excluded.seq, trimmed = excluded.trimmed"
)
_FIND_CHAT = "SELECT until, positions FROM chats WHERE sender = ? AND id = ?"
_INSERT_CHAT = "INSERT OR REPLACE INTO chats (sender, id, until, positions) VALUES (?, ?, ?, ?)"
_UPSERT_CURSOR = (
    "INSERT INTO cursors (mid, device, seq, seen) VALUES (?, ?, ?, ?) ON CONFLICT (mid, device)"
    " DO UPDATE SET seq = excluded.seq, seen = excluded.seen"
)


class _User:
    __slots__ = ("dirty", "epoch", "seq", "trimmed")

    def __init__(self, epoch: str, seq: int, trimmed: int) -> None:
        self.epoch = epoch
        self.seq = seq
        self.trimmed = trimmed
        self.dirty = False  # appended to in this batch


class _Batch:
    def __init__(
        self,
        conn: sqlite3.Connection,
        limits: InboxLimits,
        store_epoch: str,
        now: float,
        known: dict[int, UserRow],
    ) -> None:
        self.conn = conn
        self.known = known
        self.max_count = limits.max_count
        self.store_epoch = store_epoch
        self.now = now
        self.users: dict[int, _User] = {}
        self.rows: list[tuple[int, int, int, bytes, float, int]] = []
        self.cursors: dict[tuple[int, str], int] = {}
        self.wiped: list[int] = []  # users whose seq wrapped: old epoch's rows and cursors go
        self.chats: dict[tuple[int, str], tuple[float, list[Position]]] = {}  # ids recorded here

    def user(self, mid: int) -> _User:
        user = self.users.get(mid)
        if user is None:
            row = self.known.get(mid)
            if row is None:
                row = read_user(self.conn, mid, self.store_epoch)
            user = self.users[mid] = _User(*row)
        return user

    def append(self, items: Sequence[Item]) -> list[Position]:
        out = []
        rows = self.rows
        now = self.now
        for mid, op, body, sender in items:
            user = self.user(mid)
            seq = user.seq + 1
            if seq > SEQ_MAX:
                self.wrap(mid, user)
                rows = self.rows
                seq = 1
            user.seq = seq
            user.dirty = True
            rows.append((mid, seq, op, body, now, sender))
            out.append(Position(user.epoch, seq))
        return out

    def chat(self, items: Sequence[Item], chat: ChatId) -> Chatted:
        key = (chat.sender, chat.msg_id)
        first = find_chat(self.conn, key, self.now, self.chats)
        if first is not None:
            return Chatted(first, True)
        positions = self.append(items)
        self.chats[key] = (self.now + chat.window, positions)
        return Chatted(positions, False)

    def wrap(self, mid: int, user: _User) -> None:
        user.epoch = new_epoch()
        user.seq = user.trimmed = 0
        self.wiped.append(mid)
        self.rows = [row for row in self.rows if row[0] != mid]
        for key in [key for key in self.cursors if key[0] == mid]:
            del self.cursors[key]

    def ack(self, mid: int, device: str, seq: int) -> int:
        user = self.user(mid)
        key = (mid, device)
        old = self.cursors.get(key)
        if old is None:
            old = 0
            if mid not in self.wiped:
                row = self.conn.execute(
                    "SELECT seq FROM cursors WHERE mid = ? AND device = ?", (mid, device)
                ).fetchone()
                old = row[0] if row else 0
        cursor = self.cursors[key] = clamp_ack(old, seq, user.seq)
        return cursor

    def write(self) -> None:
        conn = self.conn
        if self.wiped:
            wiped = [(mid,) for mid in self.wiped]
            conn.executemany("DELETE FROM messages WHERE mid = ?", wiped)
            conn.executemany("DELETE FROM cursors WHERE mid = ?", wiped)
        users = self.users
        trims = []
        for mid, user in users.items():
            if user.dirty and user.seq - user.trimmed > self.max_count:
                user.trimmed = user.seq - self.max_count
                trims.append((mid, user.trimmed))
        if trims:
            conn.executemany(_TRIM_COUNT, trims)
        rows = self.rows
        if trims:  # a batch with more than max_count messages for one user
            rows = [row for row in rows if row[1] > users[row[0]].trimmed]
        conn.executemany(_INSERT_MESSAGE, rows)
        if self.wiped:  # a new epoch: the users row must say so (a count trim needs no row: it
            # keeps max_count >= 1 messages, whose range tells the rest)
            wrapped = [(mid, users[mid]) for mid in dict.fromkeys(self.wiped)]
            conn.executemany(_UPSERT_USER, [(mid, u.epoch, u.seq, u.trimmed) for mid, u in wrapped])
        if self.chats:
            conn.executemany(
                _INSERT_CHAT,
                [(s, i, until, encode_positions(p)) for (s, i), (until, p) in self.chats.items()],
            )
        if self.cursors:
            now = self.now
            conn.executemany(
                _UPSERT_CURSOR,
                [(mid, device, seq, now) for (mid, device), seq in self.cursors.items()],
            )


def write_batch(
    conn: sqlite3.Connection,
    ops: Sequence[Op],
    limits: InboxLimits,
    store_epoch: str,
    now: float,
    cache: UserCache | None = None,
) -> list[Result]:
    """Apply `ops` in one transaction; each op's result (positions or the cursor) in order."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        batch = _Batch(conn, limits, store_epoch, now, cache.rows if cache is not None else {})
        results: list[Result] = [
            (batch.append(op.items) if op.chat is None else batch.chat(op.items, op.chat))
            if isinstance(op, AppendOp)
            else batch.ack(op.mid, op.device, op.seq)
            for op in ops
        ]
        batch.write()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the first error is the one to report
                conn.execute("ROLLBACK")
        raise
    if cache is not None:
        cache.committed(batch.users)
    return results


def find_chat(
    conn: sqlite3.Connection,
    key: tuple[int, str],
    now: float,
    pending: dict[tuple[int, str], tuple[float, list[Position]]] | None = None,
) -> list[Position] | None:
    """The positions recorded for the chat id `key` (sender, msg_id) while its window lasts:
    in `pending` (a batch's own, not committed yet), else in the file."""
    seen = pending.get(key) if pending else None
    if seen is None:
        row = conn.execute(_FIND_CHAT, key).fetchone()
        if row is None:
            return None
        seen = (row[0], decode_positions(row[1]))
    until, positions = seen
    return list(positions) if until >= now else None
