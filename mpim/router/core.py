"""The router: worker records in, pushes out, answers truthfully. No sockets here.

:class:`Router` composes small pieces, each with a narrow job, so tests drive every one
with plain values:

- :class:`~mpim.router.peers.Workers` — the linked workers, their table entries, liveness;
- :class:`~mpim.router.confirms.Confirms` — registrations confirmed once true (bus fences);
- :class:`~mpim.router.pushes.Pushes` — push routing by key, user, room and to everyone;
- :class:`~mpim.router.requests.Requests` — resumes, messages and presence from clients;
- :class:`~mpim.router.streams.UserStreams` — the users' durable streams (the inbox);
- a :class:`~mpim.router.fabric.Fabric` — what lies beyond this host (nothing, or Redis).

:meth:`Router.on_records` dispatches each typed record from a worker to its piece.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mpim import records
from mpim.config import Config
from mpim.records import (
    Acked,
    Alive,
    BusSeen,
    Bye,
    Chat,
    Connect,
    Disconnect,
    Draining,
    Hello,
    Presence,
    Resume,
    RoomChange,
    Sync,
    Upstream,
)
from mpim.router.backend import Backend
from mpim.router.confirms import FENCE_RETRY, Confirms
from mpim.router.errors import Refused
from mpim.router.fabric import Fabric, LocalFabric
from mpim.router.peers import Link, Peer, Workers, pid_alive
from mpim.router.pushes import STAMP_KEYS, BusPort, Pushes
from mpim.router.relay import Relay
from mpim.router.requests import ReceiveHook, Requests
from mpim.router.store import SessionStore
from mpim.router.streams import UserStreams

if TYPE_CHECKING:
    from mpim.inbox import Inbox

log = logging.getLogger("mpim.router")


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
        self.loop = loop
        self.session_ttl = self.ttl(cfg)
        self.stats = collections.Counter(
            dict.fromkeys(
                (
                    "records",
                    "bad_records",
                    "resyncs",
                    "expired",
                    "ghost_workers",
                    "refused",
                    "denied",
                    "relay_dropped",
                ),
                0,
            )
        )
        self.streams = UserStreams(cfg, inbox, self)
        self._fabric: Fabric = LocalFabric(store, self.streams)
        self.workers = Workers(
            cfg, store, self._fabric, loop, self.stats, host=host, expect=expect, is_alive=is_alive
        )
        self.confirms = Confirms(store, bus_port, self.workers.by_id, loop.time, self.stats)
        self.push = Pushes(cfg, store, bus_port, self.workers, self._fabric, loop, self.stats)
        self.workers.gone = self.push.answer_waiting
        self.relay = Relay(bus_port, self.workers, self.stats)
        self.requests = Requests(self.streams, store, self._fabric, receive, loop, backend)

    @property
    def fabric(self) -> Fabric:
        return self._fabric

    @fabric.setter
    def fabric(self, fabric: Fabric) -> None:
        """Several hosts: the Redis fabric replaces the local one before the first worker links."""
        self._fabric = self.workers.fabric = self.push.fabric = self.requests.fabric = fabric

    @staticmethod
    def ttl(cfg: Config) -> float:
        # the worker closes a silent client itself; this is the safety net behind it
        return cfg.heartbeat_timeout + 2 * cfg.router.report_interval + 1.0

    def reconfigure(self, cfg: Config) -> None:
        self.cfg = self.streams.cfg = self.workers.cfg = self.push.cfg = cfg
        if self.requests.backend is not None:
            self.requests.backend.reconfigure(cfg)
        self.session_ttl = self.ttl(cfg)
        self.store.ttl = self.session_ttl

    # -- records from the workers -------------------------------------------------------------
    def on_records(self, link: Link, batch: list[records.WorkerRecord]) -> None:
        peer = self.workers.peers.get(link)
        if peer is None:
            return
        now = self.loop.time()
        peer.last_seen = now
        self.stats["records"] += len(batch)
        for record in batch:
            try:
                self._apply(peer, record, now)
            except (ValueError, TypeError, KeyError) as exc:
                self.stats["bad_records"] += 1
                log.warning("ignoring a bad record from worker %s: %s", peer.id, exc)
        self.confirms.flush()

    def _apply(self, peer: Peer, record: records.WorkerRecord, now: float) -> None:
        if type(record) is Hello:
            self.workers.hello(peer, record.host, record.name, record.pid)
            if self.bus.connected:
                self.confirms.ask_fence(peer)
            return
        info = self.workers.filed(peer, type(record), now)
        store = self.store
        match record:
            case Connect():
                held = store.conn_of(record.key)
                if held is not None and held.mid != record.mid:
                    self.confirms.deny(
                        peer, record.req, f"key {record.key!r} is held by another user (mid {held.mid})"
                    )
                    return
                self.workers.kick(store.put(info, record.key, record.mid, record.room, record.ip, now))
                filed = self._fabric.file(record.key, record.mid)
                self.confirms.confirm_filed(peer, record, filed, self._fabric.room_opened(record.room))
            case Disconnect():
                conn = store.conn_of(record.key)
                if store.remove(info, record.key) and conn is not None:
                    self._fabric.unfile(conn.key, conn.mid)
            case RoomChange():
                store.change_room(info, record.key, record.room)
                self.confirms.confirm_when(
                    peer, record.req, record.fence, self._fabric.room_opened(record.room)
                )
            case Upstream():
                self.requests.receive(record.mid, record.key, record.op, record.body)
            case Alive():
                store.renew(info, record.beats, now)
                if record.stats is not None:
                    peer.stats = record.stats
                self.workers.check(peer, record.conns, record.rooms, now)
            case Sync():
                entries = [(e.key, e.mid, e.room, e.ip) for e in record.entries]
                self.workers.synced(peer, info, entries, now)
            case Acked():
                for entry in record.acks:
                    self.streams.ack(entry.mid, entry.key, entry.seq)
            case Resume():
                self.requests.resume(peer, record)
            case Chat():
                self.requests.chat(peer, record)
            case Presence():
                self.requests.presence(peer, record)
            case BusSeen():
                peer.mark_seen = max(peer.mark_seen, record.mark)
                self.push.answer_waiting()
            case Draining():
                self.push.draining(peer, record.req)
            case Bye():
                self.workers.bye(peer, info)

    # -- the bus ------------------------------------------------------------------------------------
    def on_bus_fence(self, worker_id: str, fence: int) -> None:
        """A worker's bus fence came up the bus (its subscriptions before it are in place)."""
        self.confirms.on_bus_fence(worker_id, fence)
        self.relay.flush()

    def bus_changed(self, connected: bool) -> None:
        """The router's own connection to the bus went down or came back."""
        self.confirms.bus_changed(list(self.workers.peers.values()), connected)
        if connected:
            log.info("bus connected; waiting for every worker's fence")
            return
        log.warning("bus connection lost: room and broadcast pushes are refused until it is back")
        self.push.fail_waiting(Refused(-503, "the bus went down; the push may not have been delivered"))

    # -- timers ----------------------------------------------------------------------------------
    def tick(self) -> None:
        """Fast timer (~10/s): time out waiting pushes, ask for missing bus fences."""
        now = self.loop.time()
        self.workers.wait_no_longer(now)
        self.push.time_out(now)
        self.relay.flush()  # (a worker that left, or was dropped, no longer holds them)
        self.confirms.ask_missing(list(self.workers.peers.values()), now)

    def sweep(self) -> None:
        self.workers.sweep(self.loop.time())

    def send_room_counts(self) -> None:
        self.workers.send_room_counts(self._fabric.room_online)


__all__ = ["FENCE_RETRY", "STAMP_KEYS", "BusPort", "Link", "Peer", "Refused", "Router", "pid_alive"]
