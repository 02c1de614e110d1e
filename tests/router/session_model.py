"""A reference session store: the contract of :class:`mpim.router.store.SessionStore` written
the slow, obvious way (one list of connections, every question a scan), to check the real
stores against (the contract suite runs on both; a hypothesis test compares them)."""

from __future__ import annotations

from collections.abc import Iterable

from mpim.router.tables import Conn, Kick, WorkerInfo


class ModelSessions:
    def __init__(self, ttl: float, tick: float, now: float = 0.0) -> None:
        self.ttl = ttl
        self.tick = tick
        self.workers: dict[str, WorkerInfo] = {}
        self.conns: list[Conn] = []  # in the order they were filed
        self.next_seq: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.conns)

    # -- workers
    def worker(self, host: str, name: str, pid: int) -> tuple[WorkerInfo, bool]:
        wid = f"{host}/{name}/{pid}"
        if wid in self.workers:
            return self.workers[wid], False
        info = self.workers[wid] = WorkerInfo(host, name, pid)
        return info, True

    def predecessors(self, info: WorkerInfo) -> list[WorkerInfo]:
        return [
            w for w in self.workers.values() if (w.host, w.name) == (info.host, info.name) and w is not info
        ]

    def drop_worker(self, info: WorkerInfo) -> int:
        mine = [c for c in self.conns if c.worker is info]
        for conn in mine:
            self._forget(conn)
        self.workers.pop(info.id, None)
        return len(mine)

    # -- sessions
    def put(self, worker: WorkerInfo, key: str, mid: int, room: str, ip: str, now: float) -> Kick | None:
        old = self.conn_of(key)
        kick = None
        if old is not None:
            kick = Kick(old.worker, key) if old.worker is not worker else None
            self._forget(old)
        seq = 0
        if mid > 0:
            if not self.conns_of(mid):
                self.next_seq[mid] = 1  # a user whose last connection went starts again at 1
            seq = self.next_seq.get(mid, 1)
            self.next_seq[mid] = seq + 1
        conn = Conn(key, mid, worker, room, ip, seq)
        conn.expires = now + self.ttl
        self.conns.append(conn)
        self._recount(worker)
        return kick

    def remove(self, worker: WorkerInfo, key: str) -> bool:
        conn = self.conn_of(key)
        if conn is None or conn.worker is not worker:
            return False
        self._forget(conn)
        return True

    def change_room(self, worker: WorkerInfo, key: str, room: str) -> bool:
        conn = self.conn_of(key)
        if conn is None or conn.worker is not worker:
            return False
        conn.room = room
        self._recount(worker)
        return True

    def renew(self, worker: WorkerInfo, keys: Iterable[str], now: float) -> int:
        known = 0
        for key in keys:
            conn = self.conn_of(key)
            if conn is not None and conn.worker is worker:
                conn.expires = now + self.ttl
                known += 1
        return known

    def sync(
        self, worker: WorkerInfo, entries: Iterable[tuple[str, int, str, str]], now: float
    ) -> list[Kick]:
        listed: set[str] = set()
        kicks = []
        for key, mid, room, ip in entries:
            listed.add(key)
            conn = self.conn_of(key)
            if conn is not None and conn.worker is not worker:
                kicks.append(Kick(worker, key))
            elif conn is not None and conn.mid == mid and conn.ip == ip:
                self.change_room(worker, key, room)
                conn.expires = now + self.ttl
            else:
                self.put(worker, key, mid, room, ip, now)
        for conn in [c for c in self.conns if c.worker is worker and c.key not in listed]:
            self._forget(conn)
        return kicks

    def sweep(self, now: float) -> list[Conn]:
        expired = [c for c in self.conns if c.expires <= now]
        for conn in expired:
            self._forget(conn)
        return expired

    # -- lookups
    def group_keys(self, keys: Iterable[str]) -> dict[WorkerInfo, list[str]]:
        groups: dict[WorkerInfo, list[str]] = {}
        for key in keys:
            conn = self.conn_of(key)
            if conn is not None:
                groups.setdefault(conn.worker, []).append(key)
        return groups

    def conn_of(self, key: str) -> Conn | None:
        return next((c for c in self.conns if c.key == key), None)

    def conns_of(self, mid: int) -> list[Conn]:
        if mid <= 0:
            return []
        return sorted((c for c in self.conns if c.mid == mid), key=lambda c: c.seq)

    def online(self, room: str) -> int:
        return sum(1 for c in self.conns if room and c.room == room)

    def room_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for conn in self.conns:
            if conn.room:
                counts[conn.room] = counts.get(conn.room, 0) + 1
        return counts

    def top_rooms(self, prefix: str, limit: int) -> list[tuple[str, int]]:
        rooms = [(room, n) for room, n in self.room_counts().items() if room.startswith(prefix)]
        return sorted(rooms, key=lambda item: (-item[1], item[0]))[:limit]

    @property
    def ip_total(self) -> int:
        return len({c.ip for c in self.conns})

    # -- internals
    def _forget(self, conn: Conn) -> None:
        self.conns.remove(conn)
        self._recount(conn.worker)

    def _recount(self, worker: WorkerInfo) -> None:
        """The worker's own view (its connections by key, its room counts), derived from the list."""
        mine = [c for c in self.conns if c.worker is worker]
        worker.conns = {c.key: c for c in mine}
        counts: dict[str, int] = {}
        for conn in mine:
            if conn.room:
                counts[conn.room] = counts.get(conn.room, 0) + 1
        worker.room_count = counts
