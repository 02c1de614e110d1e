"""Registrations confirmed once they are true: a session is confirmed to its worker only after
the worker's bus fence came through (its room subscriptions are in place, so a room push
answered later reaches it) and, with several hosts, after the fabric filed it.

A worker asks with ``Connect`` / ``RoomChange`` carrying a fence number; the router asks for a
fence (``FenceRequest``), the worker publishes it on the bus, and the router's bus port
reports it here (:meth:`Confirms.on_bus_fence`). One ``Confirmed`` record per worker and
loop turn answers every request that became true.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any, Protocol

from mpim.records import Confirmed, Connect, Denied, FenceRequest
from mpim.router.peers import Peer
from mpim.router.store import SessionStore

log = logging.getLogger("mpim.router")

FENCE_RETRY = 0.1  # ask a worker for a bus fence again after this long


class BusState(Protocol):
    connected: bool


class Confirms:
    def __init__(
        self,
        store: SessionStore,
        bus: BusState,
        by_id: dict[str, Peer],
        clock: Callable[[], float],
        stats: collections.Counter[str],
    ) -> None:
        self.store = store
        self.bus = bus
        self.by_id = by_id
        self.clock = clock
        self.stats = stats
        self._due: list[Peer] = []

    def confirm(self, peer: Peer, req: int, fence: int) -> None:
        if fence <= peer.fence_seen:
            if not peer.confirms:
                self._due.append(peer)
            peer.confirms.append(req)
        else:
            peer.waiting.append((fence, req))
            if self.clock() - peer.fence_asked >= FENCE_RETRY and self.bus.connected:
                self.ask_fence(peer)

    def confirm_when(self, peer: Peer, req: int, fence: int, ready: asyncio.Future[Any] | None) -> None:
        """Confirm once this host listens on the room's cluster channel too (room pushes from
        any host come that way)."""
        if ready is None or ready.done():
            self.confirm(peer, req, fence)
            return

        def go(_: object) -> None:
            if peer.info is not None:
                self.confirm(peer, req, fence)
                self.flush()

        ready.add_done_callback(go)

    def confirm_filed(
        self,
        peer: Peer,
        rec: Connect,
        filed: asyncio.Future[int | None] | None,
        ready: asyncio.Future[Any] | None,
    ) -> None:
        """Confirm once the fabric filed the key, or deny the connect (and forget it here) when
        another host holds the key for another user."""
        if filed is None:
            self.confirm_when(peer, rec.req, rec.fence, ready)
            return

        def go(_: object) -> None:
            info = peer.info
            if info is None:
                return
            held_by = None if filed.cancelled() else filed.result()
            if held_by is None:
                self.confirm_when(peer, rec.req, rec.fence, ready)
                self.flush()
                return
            conn = self.store.conn_of(rec.key)
            if conn is not None and conn.worker.id == info.id:
                self.store.remove(info, rec.key)
            self.deny(
                peer, rec.req, f"key {rec.key!r} is held by another user (mid {held_by}) on another host"
            )

        filed.add_done_callback(go)

    def deny(self, peer: Peer, req: int, reason: str) -> None:
        """A key claimed by another mid: the old connection stays, the new one is closed."""
        self.stats["denied"] += 1
        log.info("denied a connect on worker %s: %s", peer.id, reason)
        peer.send(Denied([req], reason))

    def flush(self) -> None:
        due, self._due = self._due, []
        for peer in due:
            reqs, peer.confirms = peer.confirms, []
            if reqs:
                peer.send(Confirmed(reqs))

    def ask_fence(self, peer: Peer) -> None:
        peer.fence_asked = self.clock()
        peer.send(FenceRequest())

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
                    self._due.append(peer)
                peer.confirms.extend(ready)
                self.flush()

    def bus_changed(self, peers: list[Peer], connected: bool) -> None:
        """The router's bus connection went down or came back: every worker's fence is due again."""
        for peer in peers:
            peer.bus_ready = False
            if connected and peer.info is not None:
                self.ask_fence(peer)

    def ask_missing(self, peers: list[Peer], now: float) -> None:
        """Ask again for the fences still missing (a worker not on the bus, or confirms waiting)."""
        if not self.bus.connected:
            return
        for peer in peers:
            wants = not peer.bus_ready or peer.waiting
            if peer.info is not None and wants and now - peer.fence_asked >= FENCE_RETRY:
                self.ask_fence(peer)


__all__ = ["FENCE_RETRY", "Confirms"]
