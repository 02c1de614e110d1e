"""Session tables: who is connected where (goim v1 router semantics, no I/O).

Every connection is a :class:`Conn` filed under its key. A user (``mid > 0``) has
a :class:`Session` holding a sequence counter and ``seq -> Conn`` (so
``seq -> worker`` and ``seq -> room``), as goim's v1 router did. Counters are kept
per room, per client IP, per worker (``len(worker.conns)``) and per user
(``len(session.conns)``), so every online query is a dictionary read.

Each connection expires ``ttl`` seconds after its last heartbeat; expiry slots
of ``tick`` seconds make renewing O(1) and the sweep proportional to what
expires. This is the in-memory :class:`~mpim.router.store.SessionStore`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import NamedTuple


class Conn:
    __slots__ = ("expires", "ip", "key", "mid", "room", "seq", "slot", "worker")

    def __init__(self, key: str, mid: int, worker: WorkerInfo, room: str, ip: str, seq: int) -> None:
        self.key = key
        self.mid = mid
        self.worker = worker
        self.room = room
        self.ip = ip
        self.seq = seq
        self.expires = 0.0
        self.slot = -1


class Session:
    """One user's connections, numbered by a per-user sequence counter."""

    __slots__ = ("conns", "mid", "next_seq")

    def __init__(self, mid: int) -> None:
        self.mid = mid
        self.next_seq = 1
        self.conns: dict[int, Conn] = {}


class WorkerInfo:
    """One worker incarnation (a pid) and the sessions it holds."""

    __slots__ = ("conns", "host", "id", "name", "pid", "room_count")

    def __init__(self, host: str, name: str, pid: int) -> None:
        self.id = f"{host}/{name}/{pid}"
        self.host = host
        self.name = name
        self.pid = pid
        self.conns: dict[str, Conn] = {}
        self.room_count: dict[str, int] = {}


class Kick(NamedTuple):
    """``worker`` must close its connection with ``key``: a newer one took the key."""

    worker: WorkerInfo
    key: str


class SessionTable:
    def __init__(self, ttl: float, tick: float, now: float = 0.0) -> None:
        self.ttl = ttl
        self.tick = tick
        self.by_key: dict[str, Conn] = {}
        self.sessions: dict[int, Session] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.room_count: dict[str, int] = {}
        self.ip_count: dict[str, int] = {}
        self._slots: dict[int, set[Conn]] = {}
        self._swept = int(now / tick)

    def __len__(self) -> int:
        return len(self.by_key)

    # -- workers --------------------------------------------------------------------------
    def worker(self, host: str, name: str, pid: int) -> tuple[WorkerInfo, bool]:
        """The entry for a worker (created if new) and whether it is new."""
        wid = f"{host}/{name}/{pid}"
        info = self.workers.get(wid)
        if info is None:
            info = self.workers[wid] = WorkerInfo(host, name, pid)
            return info, True
        return info, False

    def predecessors(self, info: WorkerInfo) -> list[WorkerInfo]:
        """Other incarnations of the same worker slot (same host and name, other pid)."""
        return [
            w for w in self.workers.values() if w.host == info.host and w.name == info.name and w is not info
        ]

    def drop_worker(self, info: WorkerInfo) -> int:
        """Forget a worker and every session it held; returns how many."""
        conns = list(info.conns.values())
        for conn in conns:
            self._remove(conn)
        self.workers.pop(info.id, None)
        return len(conns)

    # -- sessions -------------------------------------------------------------------------
    def put(self, worker: WorkerInfo, key: str, mid: int, room: str, ip: str, now: float) -> Kick | None:
        """File a connection; one that another worker held under the same key must be kicked."""
        old = self.by_key.get(key)
        kick = None
        if old is not None:
            if old.worker is not worker:
                kick = Kick(old.worker, key)
            self._remove(old)
        seq = 0
        session = None
        if mid > 0:
            session = self.sessions.get(mid)
            if session is None:
                session = self.sessions[mid] = Session(mid)
            seq = session.next_seq
            session.next_seq += 1
        conn = Conn(key, mid, worker, room, ip, seq)
        if session is not None:
            session.conns[seq] = conn
        self.by_key[key] = conn
        worker.conns[key] = conn
        self._count_room(worker, room, 1)
        self.ip_count[ip] = self.ip_count.get(ip, 0) + 1
        self._renew(conn, now)
        return kick

    def remove(self, worker: WorkerInfo, key: str) -> bool:
        conn = worker.conns.get(key)
        if conn is None:
            return False
        self._remove(conn)
        return True

    def change_room(self, worker: WorkerInfo, key: str, room: str) -> bool:
        conn = worker.conns.get(key)
        if conn is None:
            return False
        if conn.room != room:
            self._count_room(worker, conn.room, -1)
            conn.room = room
            self._count_room(worker, room, 1)
        return True

    def renew(self, worker: WorkerInfo, keys: Iterable[str], now: float) -> int:
        """Heartbeats: push back the expiry of these keys; returns how many were known."""
        known = 0
        conns = worker.conns
        for key in keys:
            conn = conns.get(key)
            if conn is not None:
                self._renew(conn, now)
                known += 1
        return known

    def sync(
        self, worker: WorkerInfo, entries: Iterable[tuple[str, int, str, str]], now: float
    ) -> list[Kick]:
        """Replace a worker's sessions with its complete list of ``(key, mid, room, ip)``.

        A key that another worker holds stays there (that connection was reported
        later); the syncing worker is told to kick its own.
        """
        stale = set(worker.conns)
        kicks = []
        for key, mid, room, ip in entries:
            stale.discard(key)
            conn = self.by_key.get(key)
            if conn is not None and conn.worker is not worker:
                kicks.append(Kick(worker, key))
            elif conn is not None and conn.mid == mid and conn.ip == ip:
                self.change_room(worker, key, room)
                self._renew(conn, now)
            else:
                self.put(worker, key, mid, room, ip, now)
        for key in stale:
            self.remove(worker, key)
        return kicks

    def sweep(self, now: float) -> list[Conn]:
        """Remove and return the connections whose heartbeat expired."""
        expired = []
        last = int(now / self.tick)
        for slot in range(self._swept, last + 1):
            bucket = self._slots.pop(slot, None)
            if bucket is None:
                continue
            for conn in bucket:
                conn.slot = -1
                if conn.expires <= now:
                    expired.append(conn)
                    self._remove(conn)
                else:  # the sweep ran early: file it again
                    self._file(conn)
        self._swept = last + 1 if last >= self._swept else self._swept
        return expired

    # -- lookups --------------------------------------------------------------------------
    def group_keys(self, keys: Iterable[str]) -> dict[WorkerInfo, list[str]]:
        """Known keys grouped by the worker holding them."""
        groups: dict[WorkerInfo, list[str]] = {}
        by_key = self.by_key
        for key in keys:
            conn = by_key.get(key)
            if conn is not None:
                groups.setdefault(conn.worker, []).append(key)
        return groups

    def top_rooms(self, prefix: str, limit: int) -> list[tuple[str, int]]:
        """The ``limit`` fullest rooms whose id starts with ``prefix``, fullest first."""
        items = ((room, n) for room, n in self.room_count.items() if room.startswith(prefix))
        return heapq.nsmallest(limit, items, key=lambda item: (-item[1], item[0]))

    @property
    def ip_total(self) -> int:
        return len(self.ip_count)

    def conn_of(self, key: str) -> Conn | None:
        return self.by_key.get(key)

    def conns_of(self, mid: int) -> list[Conn]:
        session = self.sessions.get(mid)
        return list(session.conns.values()) if session is not None else []

    def online(self, room: str) -> int:
        return self.room_count.get(room, 0)

    def room_counts(self) -> dict[str, int]:
        """Every room with members on this host and its count (a copy)."""
        return dict(self.room_count)

    # -- internals ------------------------------------------------------------------------
    def _count_room(self, worker: WorkerInfo, room: str, delta: int) -> None:
        if not room:
            return
        for counts in (self.room_count, worker.room_count):
            count = counts.get(room, 0) + delta
            if count > 0:
                counts[room] = count
            else:
                counts.pop(room, None)

    def _renew(self, conn: Conn, now: float) -> None:
        if conn.slot >= 0:
            bucket = self._slots.get(conn.slot)
            if bucket is not None:
                bucket.discard(conn)
        conn.expires = now + self.ttl
        self._file(conn)

    def _file(self, conn: Conn) -> None:
        slot = max(int(conn.expires / self.tick) + 1, self._swept)
        conn.slot = slot
        bucket = self._slots.get(slot)
        if bucket is None:
            bucket = self._slots[slot] = set()
        bucket.add(conn)

    def _remove(self, conn: Conn) -> None:
        if self.by_key.get(conn.key) is conn:
            del self.by_key[conn.key]
        worker = conn.worker
        if worker.conns.get(conn.key) is conn:
            del worker.conns[conn.key]
        if conn.mid > 0:
            session = self.sessions.get(conn.mid)
            if session is not None and session.conns.get(conn.seq) is conn:
                del session.conns[conn.seq]
                if not session.conns:
                    del self.sessions[conn.mid]
        self._count_room(worker, conn.room, -1)
        n = self.ip_count.get(conn.ip, 0) - 1
        if n > 0:
            self.ip_count[conn.ip] = n
        else:
            self.ip_count.pop(conn.ip, None)
        if conn.slot >= 0:
            bucket = self._slots.get(conn.slot)
            if bucket is not None:
                bucket.discard(conn)
            conn.slot = -1
