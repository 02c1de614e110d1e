"""The router's logic: apply worker records to the tables, route pushes, answer truthfully.

No sockets here: :class:`Router` is given the session store, a bus port
(``publish(topic, record)`` and ``mark()``) and the links of the workers (anything
with ``send(record)``), so tests drive it with plain values.

What an answer means. A push by key or user is written to the link of every
worker that holds one of its connections before the answer counts them. A room
or broadcast push is answered only once every worker with members in the room
(everyone, for a broadcast) reported the bus mark that followed it, so "ok"
means it reached those workers; if one does not report within ``push_timeout``
the answer is -504 (it may or may not have arrived). The router refuses pushes
with -503 while it cannot keep that promise: while it is stopping, while it is
rebuilding its tables after a restart, while the bus is down or a worker with
members has not come back on it.

Recovery: a link that closes (the worker died) takes the worker's sessions with
it at once. A restarted router is whole once the expected workers reconnected
and sent their session lists (or ``worker_expiry`` passed). A worker that stops
sending anything for ``worker_expiry`` is dropped and asked to resync when it
wakes; a mismatch between a worker's own counts and the tables, twice in a row,
also asks for a resync. Single sessions expire when their heartbeats stop.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from mpim import bus, records
from mpim.config import Config
from mpim.records import (
    Acked,
    Alive,
    BusSeen,
    Bye,
    Chat,
    ChatAck,
    Confirmed,
    Connect,
    Denied,
    Disconnect,
    Drained,
    Draining,
    FenceRequest,
    Hello,
    InboxEntry,
    Kick,
    Presence,
    PushAll,
    PushKeys,
    PushMids,
    PushRoom,
    Replayed,
    Resume,
    Resync,
    RoomChange,
    RoomCounts,
    Sync,
    Upstream,
)
from mpim.router.backend import Backend, BackendError
from mpim.router.store import SessionStore
from mpim.router.streams import ChatError, UserStreams
from mpim.router.tables import Kick as TableKick
from mpim.router.tables import WorkerInfo

if TYPE_CHECKING:
    from mpim.inbox import Inbox
    from mpim.router.cluster import HostCluster

log = logging.getLogger("mpim.router")

FENCE_RETRY = 0.1  # ask a worker for a bus fence again after this long
STAMP_KEYS = 7  # pushes by key / mid: the 1st, 9th, 17th ... carry the time they were handed out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Refused(Exception):
    """A push the router will not (or cannot promise to) deliver; ``code`` as in goim's answers."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Link(Protocol):
    def send(self, record: bytes) -> None: ...
    def close(self) -> None: ...


class BusPort(Protocol):
    connected: bool

    def publish(self, topic: bytes, record: bytes) -> None: ...
    def mark(self) -> int: ...


ReceiveHook = Callable[[int, str, int, bytes], None]


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
        self.resync_at = -1e9
        self.confirms: list[int] = []  # this turn's confirmed requests
        self.waiting: list[tuple[int, int]] = []  # (fence, req) waiting for a bus fence
        self.stats: dict[str, int] = {}  # the worker's own counters, as last reported

    @property
    def id(self) -> str:
        return self.info.id if self.info is not None else "?"


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


class Router:
    def __init__(
        self,
        cfg: Config,
        store: SessionStore,
        bus_port: BusPort,
        receive: ReceiveHook,
        loop: asyncio.AbstractEventLoop,
        *,
        host: str = "",
        expect: int = 0,
        is_alive: Callable[[int], bool] = pid_alive,
        inbox: Inbox | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.bus = bus_port
        self.receive = receive
        self.loop = loop
        self.host = host
        self.is_alive = is_alive
        self.session_ttl = self.ttl(cfg)
        self.peers: dict[Link, Peer] = {}
        self.by_id: dict[str, Peer] = {}
        self.stopping = False
        self.expect = expect
        self.started = loop.time()
        self._whole = expect <= 0
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._confirm_due: list[Peer] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.streams = UserStreams(cfg, inbox, self)
        self.backend = backend
        self.cluster: HostCluster | None = None  # set when [cluster] redis joins several hosts
        self.stats = collections.Counter(
            dict.fromkeys(
                ("records", "bad_records", "resyncs", "expired", "ghost_workers", "refused", "denied"), 0
            )
        )
        # pushes accepted, by kind (a plain dict: a Counter's += costs four times as much)
        self.pushes = dict.fromkeys(("keys", "mids", "room", "all"), 0)
        self._handed = 0  # pushes by key / mid handed to workers (one in eight is stamped)

    @staticmethod
    def ttl(cfg: Config) -> float:
        # the worker closes a silent client itself; this is the safety net behind it
        return cfg.heartbeat_timeout + 2 * cfg.router.report_interval + 1.0

    def reconfigure(self, cfg: Config) -> None:
        self.cfg = cfg
        self.streams.cfg = cfg
        if self.backend is not None:
            self.backend.reconfigure(cfg)
        self.session_ttl = self.ttl(cfg)
        self.store.ttl = self.session_ttl

    @property
    def now(self) -> float:
        return self.loop.time()

    @property
    def waiting_pushes(self) -> int:
        """Room and broadcast pushes waiting for the workers' marks (a metric)."""
        return len(self._waiting)

    # -- links -------------------------------------------------------------------------------
    def attach(self, link: Link) -> None:
        self.peers[link] = Peer(link, self.now)

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
        if self.cluster is not None and n:
            self.cluster.rebuild_soon()
        self._settle()

    def on_records(self, link: Link, batch: list[records.WorkerRecord]) -> None:
        peer = self.peers.get(link)
        if peer is None:
            return
        now = self.now
        peer.last_seen = now
        self.stats["records"] += len(batch)
        for record in batch:
            try:
                self._apply(peer, record, now)
            except (ValueError, TypeError, KeyError) as exc:
                self.stats["bad_records"] += 1
                log.warning("ignoring a bad record from worker %s: %s", peer.id, exc)
        self._flush_confirms()

    def _apply(self, peer: Peer, record: records.WorkerRecord, now: float) -> None:
        kind = type(record)
        if kind is Hello:
            self._hello(peer, record)  # type: ignore[arg-type]
            return
        info = peer.info
        if info is None:
            raise ValueError(f"{kind.__name__} before Hello (or after Bye)")
        store = self.store
        if info.id not in store.workers:  # dropped while it was silent: file it again and resync
            info = peer.info = store.worker(info.host, info.name, info.pid)[0]
            if kind is not Sync:
                self._resync(peer, now, "it was dropped while silent")
        cluster = self.cluster
        if kind is Connect:
            rec: Any = record
            held = store.conn_of(rec.key)
            if held is not None and held.mid != rec.mid:
                self._deny(peer, rec.req, f"key {rec.key!r} is held by another user (mid {held.mid})")
                return
            self._kick(store.put(info, rec.key, rec.mid, rec.room, rec.ip, now))
            if cluster is not None:
                filed = cluster.connected(rec.key, rec.mid)
                self._confirm_filed(peer, rec, filed, cluster.room_opened(rec.room))
            else:
                self._confirm(peer, rec.req, rec.fence)
        elif kind is Disconnect:
            conn = store.conn_of(record.key)  # type: ignore[union-attr]
            if store.remove(info, record.key) and cluster is not None and conn is not None:  # type: ignore[union-attr]
                cluster.disconnected(conn.key, conn.mid)
        elif kind is RoomChange:
            rec = record
            store.change_room(info, rec.key, rec.room)
            if cluster is not None:
                self._confirm_when(peer, rec.req, rec.fence, cluster.room_opened(rec.room))
            else:
                self._confirm(peer, rec.req, rec.fence)
        elif kind is Upstream:
            rec = record
            self.receive(rec.mid, rec.key, rec.op, rec.body)
        elif kind is Alive:
            rec = record
            store.renew(info, rec.beats, now)
            if rec.stats is not None:
                peer.stats = rec.stats
            self._check(peer, rec.conns, rec.rooms, now)
        elif kind is Sync:
            entries = [(e.key, e.mid, e.room, e.ip) for e in record.entries]  # type: ignore[union-attr]
            for kick in store.sync(info, entries, now):
                self._kick(kick)
            peer.mismatches = 0
            log.info("worker %s synced %d sessions", info.id, len(entries))
            if cluster is not None:
                cluster.rebuild_soon()
            if not peer.synced:
                peer.synced = True
                self._settle()
        elif kind is Acked:
            for entry in record.acks:  # type: ignore[union-attr]
                self.streams.ack(entry.mid, entry.key, entry.seq)
        elif kind is Resume:
            self._spawn(self._resume(peer, record))  # type: ignore[arg-type]
        elif kind is Chat:
            self._spawn(self._chat(peer, record))  # type: ignore[arg-type]
        elif kind is Presence:
            self._presence(peer, record)  # type: ignore[arg-type]
        elif kind is BusSeen:
            peer.mark_seen = max(peer.mark_seen, record.mark)  # type: ignore[union-attr]
            self._answer_waiting()
        elif kind is Draining:
            self._draining(peer, record.req)  # type: ignore[union-attr]
        elif kind is Bye:
            n = store.drop_worker(info)
            peer.info = None
            if self.by_id.get(info.id) is peer:
                del self.by_id[info.id]
            log.info("worker %s left (%d sessions dropped)", info.id, n)
            self._answer_waiting()

    def _hello(self, peer: Peer, hello: Hello) -> None:
        info, new = self.store.worker(hello.host, hello.name, hello.pid)
        peer.info = info
        old = self.by_id.get(info.id)
        if old is not None and old is not peer:
            old.info = None  # a stale link of the same process: this one replaces it
            old.link.close()
        self.by_id[info.id] = peer
        log.info("worker %s linked%s", info.id, "" if new else " again")
        for other in self.store.predecessors(info):
            if other.host == self.host and not self.is_alive(other.pid):
                self._drop(other, f"replaced by pid {info.pid}")
        if self.bus.connected:
            self._ask_fence(peer)

    def _drop(self, info: WorkerInfo, why: str) -> None:
        n = self.store.drop_worker(info)
        self.stats["ghost_workers"] += 1
        log.warning("worker %s gone (%s): dropped its %d sessions", info.id, why, n)

    def kick_local(self, key: str) -> None:
        """Another host took ``key``: the connection holding it here goes (op 6)."""
        conn = self.store.conn_of(key)
        peer = self.by_id.get(conn.worker.id) if conn is not None else None
        if peer is not None:
            peer.link.send(records.encode(Kick([key])))

    def _kick(self, kick: TableKick | None) -> None:
        if kick is None:
            return
        peer = self.by_id.get(kick.worker.id)
        if peer is not None:
            peer.link.send(records.encode(Kick([kick.key])))

    def _check(self, peer: Peer, conns: int, rooms: dict[str, int] | None, now: float) -> None:
        """Compare a worker's own counts with the tables; ask for a resync on drift."""
        info = peer.info
        if info is None or not peer.synced:
            return
        drift = conns != len(info.conns) or (rooms is not None and rooms != info.room_count)
        peer.mismatches = peer.mismatches + 1 if drift else 0
        if peer.mismatches >= 2:
            self._resync(peer, now, "its counts differ from the tables")

    def _resync(self, peer: Peer, now: float, why: str) -> None:
        if now - peer.resync_at < 2 * self.cfg.router.report_interval:
            return
        peer.resync_at = now
        peer.mismatches = 0
        self.stats["resyncs"] += 1
        log.info("asking worker %s to report its sessions again: %s", peer.id, why)
        peer.link.send(records.encode(Resync()))

    # -- reliable delivery and client messages ------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("router task failed", exc_info=task.exception())

    async def _resume(self, peer: Peer, rec: Resume) -> None:
        try:
            got = await self.streams.resume(rec.mid, rec.key, rec.epoch, rec.seq, rec.cursor, rec.page)
        except Exception as exc:  # the store failed: the client cannot be told it recovered
            log.error("resume for mid=%d failed: %s", rec.mid, exc)
            got = None
        if got is None:
            peer.link.send(records.encode(Replayed(rec.req, [], "", 0, False)))
            return
        entries = [InboxEntry(seq, op, body) for seq, op, body in got.messages]
        peer.link.send(records.encode(Replayed(rec.req, entries, got.epoch, got.top, got.recovered)))

    async def _chat(self, peer: Peer, rec: Chat) -> None:
        ack: ChatAck
        try:
            if rec.to:
                body: Any = _json_body(rec.body)
                own, _ = await self.streams.chat(rec.mid, rec.id, rec.to, rec.op, body)
                ack = ChatAck(rec.req, 0, "", own)
            elif self.backend is not None:
                answer = await self.backend.deliver(rec.mid, rec.key, rec.op, rec.body)
                ack = ChatAck(rec.req, 0, "", 0, answer)
            else:
                self.receive(rec.mid, rec.key, rec.op, rec.body)
                ack = ChatAck(rec.req, 0)
        except (ChatError, BackendError, Refused) as exc:
            ack = ChatAck(rec.req, exc.code, exc.message)
        if rec.reply:
            peer.link.send(records.encode(ack))

    def _presence(self, peer: Peer, rec: Presence) -> None:
        """``user.online``: which of the users asked about have a session, on this host (the
        tables) or, with several hosts, on another one (the directory)."""
        conns_of = self.store.conns_of
        online = {mid for mid in rec.mids if conns_of(mid)}
        others = [mid for mid in rec.mids if mid not in online]
        if self.cluster is None or not others:
            self._online_answer(peer, rec, online)
        else:
            self._spawn(self._presence_elsewhere(peer, rec, online, others))

    async def _presence_elsewhere(
        self, peer: Peer, rec: Presence, online: set[int], others: list[int]
    ) -> None:
        from redis.exceptions import RedisError

        from mpim.cluster import ClusterError

        assert self.cluster is not None
        directory = self.cluster.directory
        try:
            found = await asyncio.gather(*(directory.servers_of_mids([mid]) for mid in others))
        except (ClusterError, RedisError, OSError) as exc:  # this host's answer, the rest unknown
            self.cluster._lost(exc)
            found = []
        online.update(mid for mid, servers in zip(others, found, strict=False) if servers)
        self._online_answer(peer, rec, online)

    def _online_answer(self, peer: Peer, rec: Presence, online: set[int]) -> None:
        body = json.dumps([mid for mid in rec.mids if mid in online]).encode()
        peer.link.send(records.encode(ChatAck(rec.req, 0, "", 0, body)))

    # -- registration: confirm once the worker's bus fence came through --------------------------
    def _confirm(self, peer: Peer, req: int, fence: int) -> None:
        if fence <= peer.fence_seen:
            if not peer.confirms:
                self._confirm_due.append(peer)
            peer.confirms.append(req)
        else:
            peer.waiting.append((fence, req))
            if self.now - peer.fence_asked >= FENCE_RETRY and self.bus.connected:
                self._ask_fence(peer)

    def _confirm_when(self, peer: Peer, req: int, fence: int, ready: asyncio.Future[Any] | None) -> None:
        """Confirm once this host listens on the room's cluster channel too (room pushes from
        any host come that way)."""
        if ready is None or ready.done():
            self._confirm(peer, req, fence)
            return

        def go(_: object) -> None:
            if peer.info is not None:
                self._confirm(peer, req, fence)
                self._flush_confirms()

        ready.add_done_callback(go)

    def _confirm_filed(
        self, peer: Peer, rec: Connect, filed: asyncio.Future[Any], ready: asyncio.Future[Any] | None
    ) -> None:
        """With Redis: confirm once the directory filed the key, or deny the connect (and forget
        it here) when another host holds the key for another user."""

        def go(_: object) -> None:
            info = peer.info
            if info is None:
                return
            held_by = None if filed.cancelled() else filed.result()
            if held_by is None:
                self._confirm_when(peer, rec.req, rec.fence, ready)
                self._flush_confirms()
                return
            conn = self.store.conn_of(rec.key)
            if conn is not None and conn.worker.id == info.id:
                self.store.remove(info, rec.key)
            self._deny(
                peer, rec.req, f"key {rec.key!r} is held by another user (mid {held_by}) on another host"
            )

        filed.add_done_callback(go)

    def _deny(self, peer: Peer, req: int, reason: str) -> None:
        """A key claimed by another mid: the old connection stays, the new one is closed."""
        self.stats["denied"] += 1
        log.info("denied a connect on worker %s: %s", peer.id, reason)
        peer.link.send(records.encode(Denied([req], reason)))

    def _flush_confirms(self) -> None:
        due, self._confirm_due = self._confirm_due, []
        for peer in due:
            reqs, peer.confirms = peer.confirms, []
            if reqs:
                peer.link.send(records.encode(Confirmed(reqs)))

    def _ask_fence(self, peer: Peer) -> None:
        peer.fence_asked = self.now
        peer.link.send(records.encode(FenceRequest()))

    def on_bus_fence(self, worker_id: str, fence: int) -> None:
        """A worker's bus fence came up the bus: its subscriptions before it are in place."""
        peer = self.by_id.get(worker_id)
        if peer is None:
            return
        if not peer.bus_ready:
            peer.bus_ready = True
            log.debug("worker %s is on the bus", worker_id)
        peer.fence_seen = max(peer.fence_seen, fence)
        if peer.waiting:
            ready = [req for f, req in peer.waiting if f <= fence]
            peer.waiting = [(f, req) for f, req in peer.waiting if f > fence]
            if ready:
                if not peer.confirms:
                    self._confirm_due.append(peer)
                peer.confirms.extend(ready)
                self._flush_confirms()

    def bus_changed(self, connected: bool) -> None:
        """The router's own connection to the bus went down or came back."""
        for peer in self.peers.values():
            peer.bus_ready = False
        if connected:
            log.info("bus connected; waiting for every worker's fence")
            for peer in self.peers.values():
                if peer.info is not None:
                    self._ask_fence(peer)
            return
        log.warning("bus connection lost: room and broadcast pushes are refused until it is back")
        self._fail_waiting(Refused(-503, "the bus went down; the push may not have been delivered"))

    # -- drain ---------------------------------------------------------------------------------
    def stop_pushes(self) -> None:
        """The host is stopping: refuse every push from now on."""
        if not self.stopping:
            self.stopping = True
            log.info("stopping: refusing new pushes")

    def _draining(self, peer: Peer, req: int) -> None:
        """Route nothing more to this worker; its answer carries the mark that ends its pushes."""
        peer.draining = True
        mark = self.bus.mark()
        peer.link.send(records.encode(Drained(req, mark)))
        self._answer_waiting()

    # -- pushes ----------------------------------------------------------------------------------
    def _refuse_unless_ready(self) -> None:
        if self.stopping:
            self.stats["refused"] += 1
            raise Refused(-503, "the server is stopping; push refused")
        if not self._whole:
            self.stats["refused"] += 1
            synced = sum(1 for p in self.peers.values() if p.synced)
            raise Refused(
                -503, f"the router is rebuilding its tables ({synced} of {self.expect} workers reported)"
            )
        refusal = self.cluster.refusal() if self.cluster is not None else ""
        if refusal:
            self.stats["refused"] += 1
            raise Refused(-503, refusal)

    def _stamp(self) -> float:
        """When a push by key or mid is handed out: one in eight carries it (the latency metric)."""
        self._handed = n = self._handed + 1
        return time.monotonic() if n & STAMP_KEYS == 1 else 0.0

    def _send_keys(self, groups: dict[WorkerInfo, list[str]], op: int, body: bytes) -> int:
        found = 0
        at = self._stamp()
        for info, keys in groups.items():
            peer = self.by_id.get(info.id)
            if peer is None or peer.draining:
                continue
            peer.link.send(records.encode(PushKeys(op, keys, body, at=at)))
            found += len(keys)
        return found

    def send_keys_local(self, op: int, keys: list[str], body: bytes) -> int:
        return self._send_keys(self.store.group_keys(dict.fromkeys(keys)), op, body)

    def push_keys(self, op: int, keys: list[str], body: bytes) -> int | asyncio.Future[int]:
        """Hand to the workers holding these keys; returns how many connections (with several
        hosts: a future of it, once the other hosts holding some of the keys were told)."""
        self._refuse_unless_ready()
        self.pushes["keys"] += 1
        local = self.send_keys_local(op, keys, body)
        if self.cluster is None:
            return local
        return self.loop.create_task(self._remote(local, self.cluster.push_keys(op, keys, body)))

    async def _remote(self, local: int, remote: Any) -> int:
        """Add what other hosts took; a Redis failure is a clear error naming what was done here."""
        from redis.exceptions import RedisError

        from mpim.cluster import ClusterError

        assert self.cluster is not None
        try:
            found = local + int(await remote)
        except (ClusterError, RedisError, OSError) as exc:
            self.cluster._lost(exc)
            raise Refused(-503, f"delivered on this host only ({local} connections): Redis: {exc}") from None
        partial = self.cluster.answered()
        if partial:  # (Redis answered, but the view of the other hosts is not whole yet)
            raise Refused(-503, f"delivered on this host only ({local} connections): {partial}")
        return found

    def push_mids(self, op: int, mids: list[int], body: bytes) -> asyncio.Future[tuple[int, dict[int, int]]]:
        """Append to each user's stream, then hand to every connection of these users.

        Resolves to (connections, {mid: seq}) once the messages are stored and sent."""
        self._refuse_unless_ready()
        self.pushes["mids"] += 1
        if self.cluster is None:
            return self.streams.push_mids_here(op, mids, body)
        return self.loop.create_task(self.streams.push_mids(op, mids, body))

    async def deliver_mids(self, op: int, mids: list[int], body: bytes, seqs: list[int]) -> int:
        """A stored message to every connection of these users, on this host and the others."""
        local = self.send_mids(op, mids, body, seqs)
        if self.cluster is None:
            return local
        return await self._remote(local, self.cluster.push_mids(op, mids, body, seqs))

    def send_mids(self, op: int, mids: list[int], body: bytes, seqs: list[int]) -> int:
        """Hand a stored message (its seq per user, 0 = none) to every connection of these users:
        one record per worker holding some of them, the keys in the order of the users."""
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
        for worker_id, (keys, key_seqs) in targets.items():
            peer = self.by_id.get(worker_id)
            if peer is not None and not peer.draining:
                peer.link.send(records.encode(PushMids(op, body, keys, key_seqs, at)))
                found += len(keys)
        return found

    def push_room(self, op: int, room: str, body: bytes) -> asyncio.Future[None]:
        self._refuse_unless_ready()
        self.pushes["room"] += 1
        if self.cluster is not None:  # one order for every host: each one (this one too) takes it from Redis
            return self.loop.create_task(self._both(None, self.cluster.push_room(op, room, body)))
        peers = [
            p
            for p in self.peers.values()
            if p.info is not None and not p.draining and room in p.info.room_count
        ]
        record = records.encode(PushRoom(op, body, time.monotonic()))
        return self._publish(bus.room_topic(room), record, peers)

    def push_all(self, op: int, speed: int, body: bytes) -> asyncio.Future[None]:
        """``speed`` is for the whole host (goim), or with several hosts for the cluster."""
        self._refuse_unless_ready()
        self.pushes["all"] += 1
        if self.cluster is not None:  # every host, this one included, takes its share from Redis
            return self.loop.create_task(self._both(None, self.cluster.push_all(op, speed, body)))
        peers = [p for p in self.peers.values() if p.info is not None and not p.draining]
        share = -(-speed // max(1, len(peers))) if speed > 0 else 0
        record = records.encode(PushAll(op, share, body, time.monotonic()))
        return self._publish(bus.BROADCAST, record, peers)

    async def _both(self, local: asyncio.Future[None] | None, remote: Any) -> None:
        """This host's delivery (confirmed by its workers) and the other hosts' (published)."""
        try:
            await self._remote(0, remote)
        finally:
            if local is not None:
                await local

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
        waiting = _Waiting(mark, peers, future, self.now + self.cfg.router.push_timeout)
        if waiting.done():
            future.set_result(None)
        else:
            self._waiting.append(waiting)
        return future

    def _answer_waiting(self) -> None:
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

    def _fail_waiting(self, exc: Refused) -> None:
        queue, self._waiting = self._waiting, collections.deque()
        for waiting in queue:
            if not waiting.future.done():
                waiting.future.set_exception(exc)

    # -- timers ----------------------------------------------------------------------------------
    def _settle(self) -> None:
        if not self._whole:
            synced = sum(1 for p in self.peers.values() if p.synced)
            if synced >= self.expect:
                self._whole = True
                log.info("router tables are whole: %d workers reported", synced)

    def tick(self) -> None:
        """Fast timer (~10/s): time out waiting pushes, ask for missing bus fences."""
        now = self.now
        if not self._whole and now - self.started >= self.cfg.router.worker_expiry:
            self._whole = True
            log.warning(
                "router serving with %d of %d expected workers reported", len(self.by_id), self.expect
            )
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
        if self.bus.connected:
            for peer in self.peers.values():
                wants = not peer.bus_ready or peer.waiting
                if peer.info is not None and wants and now - peer.fence_asked >= FENCE_RETRY:
                    self._ask_fence(peer)

    def sweep(self) -> None:
        now = self.now
        expired = self.store.sweep(now)
        if expired:
            self.stats["expired"] += len(expired)
            log.info("expired %d sessions with no heartbeat", len(expired))
        expiry = self.cfg.router.worker_expiry
        for peer in self.peers.values():
            info = peer.info
            if info is not None and info.id in self.store.workers and now - peer.last_seen > expiry:
                self._drop(info, f"silent for {now - peer.last_seen:.1f}s")

    def room_online(self, room: str) -> int:
        """A room's count: cluster-wide with several hosts (as last read), else this host's."""
        cluster = self.cluster
        if cluster is not None:
            return cluster.room_online(room)
        return self.store.online(room)

    def send_room_counts(self) -> None:
        online = self.room_online
        for peer in self.peers.values():
            info = peer.info
            if info is not None and info.room_count:
                peer.link.send(records.encode(RoomCounts({room: online(room) for room in info.room_count})))

    # -- views ---------------------------------------------------------------------------------------
    def workers(self) -> list[dict[str, Any]]:
        now = self.now
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


def _json_body(raw: bytes) -> Any:
    """A private message's body as the client sent it (JSON, checked by its worker)."""
    import json

    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise ChatError(-400, "body is not JSON") from None
