"""Push routing: by key and by user to the links of the workers holding them, by room and to
everyone over the bus, each answered truthfully.

A push by key or user is written to the link of every worker that holds one of its
connections before the answer counts them. A room or broadcast push is answered only
once every worker with members in the room (everyone, for a broadcast) reported the
bus mark that followed it, so "ok" means it reached those workers; if one does not
report within ``push_timeout`` the answer is -504 (it may or may not have arrived).
Pushes are refused with -503 while that promise cannot be kept: while the host is
stopping, while the router rebuilds its tables after a restart, while the bus is down
or a worker with members has not come back on it, and while the fabric says so.
What other hosts must do is the fabric's part (:mod:`mpim.router.fabric`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol

from mpim import bus, records
from mpim.config import Config
from mpim.records import Drained, PushAll, PushKeys, PushMids, PushRoom
from mpim.router.errors import Refused
from mpim.router.peers import Peer, Workers
from mpim.router.store import SessionStore
from mpim.router.tables import WorkerInfo

if TYPE_CHECKING:
    from mpim.router.fabric import Fabric
    from mpim.router.streams import Stored

log = logging.getLogger("mpim.router")

STAMP_KEYS = 7  # pushes by key / mid: the 1st, 9th, 17th ... carry the time they were handed out


class BusPort(Protocol):
    connected: bool

    def publish(self, topic: bytes, record: bytes) -> None: ...
    def mark(self) -> int: ...


class _Waiting:
    """A room or broadcast push waiting for the workers to report its mark."""

    __slots__ = ("deadline", "future", "mark", "peers")

    def __init__(self, mark: int, peers: list[Peer], future: asyncio.Future[None], deadline: float) -> None:
        self.mark = mark
        self.peers = peers
        self.future = future
        self.deadline = deadline

    def done(self) -> bool:
        return all(p.mark_seen >= self.mark or p.info is None or p.draining for p in self.peers)


class Pushes:
    def __init__(
        self,
        cfg: Config,
        store: SessionStore,
        bus_port: BusPort,
        workers: Workers,
        fabric: Fabric,
        loop: asyncio.AbstractEventLoop,
        stats: collections.Counter[str],
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.bus = bus_port
        self.workers = workers
        self.fabric = fabric
        self.loop = loop
        self.stats = stats
        self.stopping = False
        # pushes accepted, by kind (a plain dict: a Counter's += costs four times as much)
        self.counts = dict.fromkeys(("keys", "mids", "room", "all"), 0)
        self._handed = 0  # pushes by key / mid handed to workers (one in eight is stamped)
        self._waiting: collections.deque[_Waiting] = collections.deque()
        # several router shards: a room's members of the other shards' users are not in these
        # tables, so a room push waits for every worker (set by the shard fabric)
        self.every_worker = False

    @property
    def waiting(self) -> int:
        """Room and broadcast pushes waiting for the workers' marks (a metric)."""
        return len(self._waiting)

    def stop(self) -> None:
        """The host is stopping: refuse every push from now on."""
        if not self.stopping:
            self.stopping = True
            log.info("stopping: refusing new pushes")

    def refuse_unless_ready(self) -> None:
        if self.stopping:
            self.stats["refused"] += 1
            raise Refused(-503, "the server is stopping; push refused")
        refusal = self.workers.refusal() or self.fabric.refusal()
        if refusal:
            self.stats["refused"] += 1
            raise Refused(-503, refusal)

    def _stamp(self) -> float:
        """When a push by key or mid is handed out: one in eight carries it (the latency metric)."""
        self._handed = n = self._handed + 1
        return time.monotonic() if n & STAMP_KEYS == 1 else 0.0

    # -- by key and by user ------------------------------------------------------------------------
    def _send_keys(self, groups: dict[WorkerInfo, list[str]], op: int, body: bytes) -> int:
        found = 0
        at = self._stamp()
        by_id = self.workers.by_id
        for info, keys in groups.items():
            peer = by_id.get(info.id)
            if peer is None or peer.draining:
                continue
            peer.send(PushKeys(op, keys, body, at=at))
            found += len(keys)
        return found

    def send_keys(self, op: int, keys: list[str], body: bytes) -> int:
        """Hand to the workers of this host holding these keys; returns how many connections."""
        return self._send_keys(self.store.group_keys(dict.fromkeys(keys)), op, body)

    def keys(self, op: int, keys: list[str], body: bytes) -> int | asyncio.Future[int]:
        """Hand to the workers holding these keys; returns how many connections (with several
        hosts: a future of it, once the other hosts holding some of the keys were told)."""
        self.refuse_unless_ready()
        self.counts["keys"] += 1
        return self.fabric.push_keys(self.send_keys(op, keys, body), op, keys, body)

    def mids(self, op: int, mids: list[int], body: bytes) -> asyncio.Future[Stored]:
        """Append to each user's stream, then hand to every connection of these users.

        Resolves to (connections, {mid: seq}) once the messages are stored and sent."""
        self.refuse_unless_ready()
        self.counts["mids"] += 1
        return self.fabric.push_mids(op, mids, body)

    def deliver_mids(self, op: int, mids: list[int], seqs: list[int], body: bytes) -> int | Awaitable[int]:
        """A stored message to every connection of these users, on this host and the others."""
        return self.fabric.deliver_mids(self.send_mids(op, mids, seqs, body), op, mids, seqs, body)

    def send_mids(self, op: int, mids: list[int], seqs: list[int], body: bytes) -> int:
        """Hand a stored message (its seq per user, 0 = none) to this host's connections of these
        users: one record per worker holding some of them, the keys in the order of the users."""
        found = 0
        conns_of = self.store.conns_of
        targets: dict[str, tuple[list[str], list[int]]] = {}
        for mid, seq in zip(mids, seqs, strict=True):
            for conn in conns_of(mid):
                target = targets.get(conn.worker.id)
                if target is None:
                    target = targets[conn.worker.id] = ([], [])
                target[0].append(conn.key)
                target[1].append(seq)
        at = self._stamp()
        by_id = self.workers.by_id
        for worker_id, (keys, key_seqs) in targets.items():
            peer = by_id.get(worker_id)
            if peer is not None and not peer.draining:
                peer.send(PushMids(op, keys, key_seqs, body, at))
                found += len(keys)
        return found

    # -- rooms and everyone ------------------------------------------------------------------------
    def room(self, op: int, room: str, body: bytes) -> asyncio.Future[None]:
        self.refuse_unless_ready()
        self.counts["room"] += 1
        return self.fabric.push_room(op, room, body, lambda: self._room_here(op, room, body))

    def _room_here(self, op: int, room: str, body: bytes) -> asyncio.Future[None]:
        peers = [
            p
            for p in self.workers.peers.values()
            if p.info is not None and not p.draining and (self.every_worker or room in p.info.room_count)
        ]
        record = records.encode(PushRoom(op, body, time.monotonic()))
        return self._publish(bus.room_topic(room), record, peers)

    def all(self, op: int, speed: int, body: bytes) -> asyncio.Future[None]:
        """``speed`` is for the whole host (goim), or with several hosts for the cluster."""
        self.refuse_unless_ready()
        self.counts["all"] += 1
        return self.fabric.push_all(op, speed, body, lambda host_speed: self._all_here(op, host_speed, body))

    def _all_here(self, op: int, speed: int, body: bytes) -> asyncio.Future[None]:
        peers = [p for p in self.workers.peers.values() if p.info is not None and not p.draining]
        share = -(-speed // max(1, len(peers))) if speed > 0 else 0
        record = records.encode(PushAll(op, share, body, time.monotonic()))
        return self._publish(bus.BROADCAST, record, peers)

    def _publish(self, topic: bytes, record: bytes, peers: list[Peer]) -> asyncio.Future[None]:
        if not self.bus.connected:
            self.stats["refused"] += 1
            raise Refused(-503, "the bus is down; push refused")
        late = [p.id for p in peers if not p.bus_ready]
        if late:
            self.stats["refused"] += 1
            raise Refused(-503, f"worker {late[0]} is not on the bus yet; push refused")
        self.bus.publish(topic, record)
        future: asyncio.Future[None] = self.loop.create_future()
        mark = self.bus.mark()
        waiting = _Waiting(mark, peers, future, self.loop.time() + self.cfg.router.push_timeout)
        if waiting.done():
            future.set_result(None)
        else:
            self._waiting.append(waiting)
        return future

    # -- the workers' marks --------------------------------------------------------------------------
    def draining(self, peer: Peer, req: int) -> None:
        """Route nothing more to this worker; its answer carries the mark that ends its pushes."""
        peer.draining = True
        peer.send(Drained(req, self.bus.mark()))
        self.answer_waiting()

    def answer_waiting(self) -> None:
        queue = self._waiting
        while queue and queue[0].done():
            waiting = queue.popleft()
            if not waiting.future.done():
                waiting.future.set_result(None)
        if queue:  # later marks can be done while an earlier one waits on a slow worker
            for waiting in [w for w in queue if w.done()]:
                queue.remove(waiting)
                if not waiting.future.done():
                    waiting.future.set_result(None)

    def fail_waiting(self, exc: Refused) -> None:
        queue, self._waiting = self._waiting, collections.deque()
        for waiting in queue:
            if not waiting.future.done():
                waiting.future.set_exception(exc)

    def time_out(self, now: float) -> None:
        """Answer -504 for the room and broadcast pushes whose workers did not report in time."""
        while self._waiting and self._waiting[0].deadline <= now:
            waiting = self._waiting.popleft()
            late = [p.id for p in waiting.peers if p.mark_seen < waiting.mark and p.info is not None]
            if not waiting.future.done():
                self.stats["push_timeouts"] += 1
                waiting.future.set_exception(
                    Refused(
                        -504, f"not confirmed by worker {', '.join(late)} in time; it may have been delivered"
                    )
                )


__all__ = ["STAMP_KEYS", "BusPort", "Pushes"]
