"""The workers linked to this router: their links, their table entries, their liveness.

A link that closes (the worker died) takes the worker's sessions with it at once. A
restarted router is whole once the expected workers reconnected and sent their
session lists (or ``worker_expiry`` passed). A worker that stops sending anything for
``worker_expiry`` is dropped and asked to resync when it wakes; a mismatch between a
worker's own counts and the tables, twice in a row, also asks for a resync.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from mpim import records
from mpim.config import Config
from mpim.records import Kick, Resync, RoomCounts, Sync
from mpim.router.store import SessionStore
from mpim.router.tables import Kick as TableKick
from mpim.router.tables import WorkerInfo

if TYPE_CHECKING:
    from mpim.router.fabric import Fabric

log = logging.getLogger("mpim.router")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Link(Protocol):
    def send(self, record: bytes) -> None: ...
    def close(self) -> None: ...


class Peer:
    """One connected worker as the router sees it: its link, its table entry, its bus state."""

    __slots__ = (
        "bus_ready",
        "confirms",
        "draining",
        "fence_asked",
        "fence_seen",
        "info",
        "last_seen",
        "link",
        "mark_seen",
        "mismatches",
        "resync_at",
        "rooms",
        "stats",
        "synced",
        "waiting",
    )

    def __init__(self, link: Link, now: float) -> None:
        self.link = link
        self.info: WorkerInfo | None = None
        self.last_seen = now
        self.bus_ready = False  # a bus fence from it came through since our bus (re)connected
        self.fence_seen = 0
        self.fence_asked = -1e9
        self.mark_seen = 0
        self.draining = False
        self.synced = False
        self.mismatches = 0
        self.rooms: set[str] = set()  # the rooms it last said it has members in (any shard's)
        self.resync_at = -1e9
        self.confirms: list[int] = []  # this turn's confirmed requests
        self.waiting: list[tuple[int, int]] = []  # (fence, req) waiting for a bus fence
        self.stats: dict[str, int] = {}  # the worker's own counters, as last reported

    @property
    def id(self) -> str:
        return self.info.id if self.info is not None else "?"

    def send(self, record: Any) -> None:
        self.link.send(records.encode(record))


class Workers:
    """The peer set: who is linked, who is filed, who went silent, and whether the tables are whole."""

    def __init__(
        self,
        cfg: Config,
        store: SessionStore,
        fabric: Fabric,
        loop: asyncio.AbstractEventLoop,
        stats: collections.Counter[str],
        *,
        host: str = "",
        expect: int = 0,
        is_alive: Callable[[int], bool] = pid_alive,
        gone: Callable[[], None] = lambda: None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.fabric = fabric
        self.loop = loop
        self.stats = stats
        self.host = host
        self.expect = expect
        self.is_alive = is_alive
        self.gone = gone  # a worker left: room pushes waiting on it may be answered now
        self.peers: dict[Link, Peer] = {}
        self.by_id: dict[str, Peer] = {}
        self.started = loop.time()
        self.whole = expect <= 0

    # -- links -------------------------------------------------------------------------------
    def attach(self, link: Link) -> None:
        self.peers[link] = Peer(link, self.loop.time())

    def detach(self, link: Link) -> None:
        """The link closed: the worker is gone (or restarting its link), and so are its sessions."""
        peer = self.peers.pop(link, None)
        if peer is None or peer.info is None:
            return
        info, peer.info = peer.info, None
        if self.by_id.get(info.id) is peer:
            del self.by_id[info.id]
        n = self.store.drop_worker(info)
        log.info("worker %s link closed: dropped its %d sessions", info.id, n)
        if n:
            self.fabric.sessions_changed()
        self.settle()

    def hello(self, peer: Peer, host: str, name: str, pid: int) -> None:
        info, new = self.store.worker(host, name, pid)
        peer.info = info
        old = self.by_id.get(info.id)
        if old is not None and old is not peer:
            old.info = None  # a stale link of the same process: this one replaces it
            old.link.close()
        self.by_id[info.id] = peer
        log.info("worker %s linked%s", info.id, "" if new else " again")
        for other in self.store.predecessors(info):
            if other.host == self.host and not self.is_alive(other.pid):
                self.drop(other, f"replaced by pid {info.pid}")

    def filed(self, peer: Peer, kind: type, now: float) -> WorkerInfo:
        """The peer's table entry for a record of ``kind``; ValueError before Hello (or after Bye)."""
        info = peer.info
        if info is None:
            raise ValueError(f"{kind.__name__} before Hello (or after Bye)")
        if info.id not in self.store.workers:  # dropped while it was silent: file it again and resync
            info = peer.info = self.store.worker(info.host, info.name, info.pid)[0]
            if kind is not Sync:
                self.resync(peer, now, "it was dropped while silent")
        return info

    def bye(self, peer: Peer, info: WorkerInfo) -> None:
        n = self.store.drop_worker(info)
        peer.info = None
        if self.by_id.get(info.id) is peer:
            del self.by_id[info.id]
        log.info("worker %s left (%d sessions dropped)", info.id, n)
        if n:
            self.fabric.sessions_changed()
        self.gone()

    def drop(self, info: WorkerInfo, why: str) -> None:
        n = self.store.drop_worker(info)
        self.stats["ghost_workers"] += 1
        log.warning("worker %s gone (%s): dropped its %d sessions", info.id, why, n)
        if n:
            self.fabric.sessions_changed()  # (its entries elsewhere go now, not at their expiry)

    def synced(
        self, peer: Peer, info: WorkerInfo, entries: list[tuple[str, int, str, str]], now: float
    ) -> None:
        for kick in self.store.sync(info, entries, now):
            self.kick(kick)
        peer.mismatches = 0
        log.info("worker %s synced %d sessions", info.id, len(entries))
        self.fabric.sessions_changed()
        if not peer.synced:
            peer.synced = True
            self.settle()

    # -- kicks ----------------------------------------------------------------------------------
    def kick_key(self, key: str) -> None:
        """Another host took ``key``: the connection holding it here goes (op 6)."""
        conn = self.store.conn_of(key)
        peer = self.by_id.get(conn.worker.id) if conn is not None else None
        if peer is not None:
            peer.send(Kick([key]))

    def kick(self, kick: TableKick | None) -> None:
        if kick is None:
            return
        peer = self.by_id.get(kick.worker.id)
        if peer is not None:
            peer.send(Kick([kick.key]))

    # -- liveness ---------------------------------------------------------------------------------
    def check(self, peer: Peer, conns: int, rooms: dict[str, int] | None, now: float) -> None:
        """Compare a worker's own counts with the tables; ask for a resync on drift."""
        info = peer.info
        if info is None or not peer.synced:
            return
        if rooms is not None:
            peer.rooms = set(rooms)
            rooms = {room: n for room, n in rooms.items() if n}  # (0: another router shard's members)
        drift = conns != len(info.conns) or (rooms is not None and rooms != info.room_count)
        peer.mismatches = peer.mismatches + 1 if drift else 0
        if peer.mismatches >= 2:
            self.resync(peer, now, "its counts differ from the tables")

    def resync(self, peer: Peer, now: float, why: str) -> None:
        if now - peer.resync_at < 2 * self.cfg.router.report_interval:
            return
        peer.resync_at = now
        peer.mismatches = 0
        self.stats["resyncs"] += 1
        log.info("asking worker %s to report its sessions again: %s", peer.id, why)
        peer.send(Resync())

    def settle(self) -> None:
        if not self.whole:
            synced = sum(1 for p in self.peers.values() if p.synced)
            if synced >= self.expect:
                self.whole = True
                log.info("router tables are whole: %d workers reported", synced)

    def wait_no_longer(self, now: float) -> None:
        """Past ``worker_expiry`` after the start, serve with whoever reported."""
        if not self.whole and now - self.started >= self.cfg.router.worker_expiry:
            self.whole = True
            log.warning(
                "router serving with %d of %d expected workers reported", len(self.by_id), self.expect
            )

    def refusal(self) -> str:
        if self.whole:
            return ""
        synced = sum(1 for p in self.peers.values() if p.synced)
        return f"the router is rebuilding its tables ({synced} of {self.expect} workers reported)"

    def sweep(self, now: float) -> None:
        expired = self.store.sweep(now)
        if expired:
            self.stats["expired"] += len(expired)
            log.info("expired %d sessions with no heartbeat", len(expired))
            for conn in expired:
                self.fabric.unfile(conn.key, conn.mid)
        expiry = self.cfg.router.worker_expiry
        for peer in self.peers.values():
            info = peer.info
            if info is not None and info.id in self.store.workers and now - peer.last_seen > expiry:
                self.drop(info, f"silent for {now - peer.last_seen:.1f}s")

    # -- views and counts -------------------------------------------------------------------------
    def send_room_counts(self, online: Callable[[str], int]) -> None:
        for peer in self.peers.values():
            info = peer.info
            if info is not None and (info.room_count or peer.rooms):
                rooms = peer.rooms.union(info.room_count)
                peer.send(RoomCounts({room: online(room) for room in rooms}))

    def view(self) -> list[dict[str, Any]]:
        now = self.loop.time()
        rows = []
        for peer in self.by_id.values():
            info = peer.info
            if info is None or info.id not in self.store.workers:  # gone, or swept while silent
                continue
            rows.append(
                {
                    "id": info.id,
                    "host": info.host,
                    "name": info.name,
                    "pid": info.pid,
                    "conns": len(info.conns),
                    "rooms": len(info.room_count),
                    "last_seen": round(now - peer.last_seen, 3),
                    "bus": peer.bus_ready,
                    "draining": peer.draining,
                    "stats": peer.stats,
                }
            )
        return rows


__all__ = ["Link", "Peer", "Workers", "pid_alive"]
