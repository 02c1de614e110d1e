"""The worker's ZeroMQ link: report sessions to the router, take deliveries from the bus.

Reports: the hub's calls (connect, disconnect, room change, upstream) append
events to a list that is sent as one PUSH message at the end of the loop
iteration. Every ``[router] report_interval`` an alive event adds the
connection count, the keys that heart-beat meanwhile and, every
``online_interval``, the local room counts. A full session list (``EV_SYNC``)
goes out when the router's status shows an epoch we have not synced with (the
router restarted, or we just started), when the router asks, or when a report
could not be queued.

Deliveries: a SUB socket on the bus takes this worker's own topic, the
broadcast and status topics, and the topic of each room with local members
(subscribed when the room opens, dropped when it empties).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import zmq

from mpim import bus
from mpim.config import Config
from mpim.runtime import Endpoints, server_name
from mpim.worker.channel import AUTHED

if TYPE_CHECKING:
    import asyncio

    from mpim.auth import Identity
    from mpim.worker.channel import Channel
    from mpim.worker.hub import Hub
    from mpim.worker.link import ClusterLink

log = logging.getLogger("mpim.link")


def _ip(channel: Channel) -> str:
    peer = channel.transport.get_extra_info("peername") if channel.transport is not None else None
    return str(peer[0]) if peer else ""


class ZmqLink:
    def __init__(self, cfg: Config, endpoints: Endpoints, name: str) -> None:
        endpoints = endpoints.configured(cfg)
        self.cfg = cfg
        self.host = server_name(cfg)
        self.pid = os.getpid()
        # The name is the worker slot; our id adds the pid, so a ".<pid>" suffix is redundant.
        self.name = name.removesuffix(f".{self.pid}")
        self.id = f"{self.host}/{self.name}/{self.pid}"
        self.ctx = zmq.Context()
        self.report = self.ctx.socket(zmq.PUSH)
        self.report.setsockopt(zmq.SNDHWM, cfg.bus.hwm)
        self.report.setsockopt(zmq.LINGER, 0)
        self.report.connect(endpoints.router)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, cfg.bus.hwm)
        self.sub.setsockopt(zmq.LINGER, 0)
        for topic in (bus.worker_topic(self.id), bus.BROADCAST, bus.CONTROL):
            self.sub.setsockopt(zmq.SUBSCRIBE, topic)
        self.sub.connect(endpoints.bus_out)
        self.hub: Hub | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.reader: bus.SocketReader[bytes] | None = None
        self.epoch = 0  # the router epoch our last full session list was sent for
        self.router_epoch = 0
        self._events: list[list[Any]] = []
        self._beats: set[str] = set()
        self._flush_handle: asyncio.Handle | None = None
        self._alive_handle: asyncio.TimerHandle | None = None
        self._rooms_at = 0.0
        self._lost = False
        self.stats = {"reports": 0, "lost_reports": 0, "deliveries": 0, "syncs": 0, "bad_messages": 0}

    # -- lifecycle -----------------------------------------------------------------------------
    def attach(self, hub: Hub) -> None:
        self.hub = hub
        self.loop = hub.loop
        for room in hub.rooms:
            self.room_opened(room.id)
        self.reader = bus.SocketReader(hub.loop, self.sub, self.sub.recv, self._on_message)
        self.reader.start()
        self._alive_handle = hub.loop.call_later(self.cfg.router.report_interval, self._alive)
        log.info("worker %s linked to the router and the bus", self.id)

    async def close(self) -> None:
        """Say goodbye (the router forgets our sessions at once) and close the sockets."""
        for handle in (self._alive_handle, self._flush_handle):
            if handle is not None:
                handle.cancel()
        if self.reader is not None:
            self.reader.stop()
        self._events.append([bus.EV_BYE])
        self._flush()
        self.report.close(linger=200)
        self.sub.close(linger=0)
        self.ctx.destroy(linger=0)

    # -- reports (called from the hub's hot paths: queue only) -------------------------------------
    def _queue(self, event: list[Any]) -> None:
        self._events.append(event)
        if self._flush_handle is None and self.loop is not None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def connected(self, channel: Channel, identity: Identity) -> None:
        room = channel.room.id if channel.room is not None else ""
        self._queue([bus.EV_CONNECT, channel.key, channel.mid, room, _ip(channel)])

    def disconnected(self, channel: Channel) -> None:
        hub = self.hub
        if hub is not None:
            current = hub.buckets.get(channel.key)
            if current is not None and current is not channel:
                return  # a newer connection took the key here; the router already knows
        self._beats.discard(channel.key)
        self._queue([bus.EV_DISCONNECT, channel.key])

    def room_changed(self, channel: Channel, old: str, new: str) -> None:
        self._queue([bus.EV_ROOM, channel.key, new])

    def heartbeat(self, channel: Channel) -> None:
        self._beats.add(channel.key)

    def upstream(self, channel: Channel, op: int, body: bytes) -> None:
        self._queue([bus.EV_UPSTREAM, channel.key, channel.mid, op, body])

    def room_opened(self, room_id: str) -> None:
        self.sub.setsockopt(zmq.SUBSCRIBE, bus.room_topic(room_id))
        if self.reader is not None:
            self.reader.poke()

    def room_closed(self, room_id: str) -> None:
        self.sub.setsockopt(zmq.UNSUBSCRIBE, bus.room_topic(room_id))
        if self.reader is not None:
            self.reader.poke()

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._events:
            return
        events, self._events = self._events, []
        try:
            self.report.send(bus.pack([self.host, self.name, self.pid, events]), zmq.NOBLOCK)
            self.stats["reports"] += 1
        except zmq.Again:
            self.stats["lost_reports"] += 1
            if not self._lost:
                log.warning("router is not taking reports; will send every session once it does")
            self._lost = True

    def _alive(self) -> None:
        hub = self.hub
        assert hub is not None and self.loop is not None
        cfg = self.cfg.router
        self._alive_handle = self.loop.call_later(cfg.report_interval, self._alive)
        if self._lost:
            self._lost = False
            self.sync()
        rooms = None
        now = self.loop.time()
        if now - self._rooms_at >= cfg.online_interval - 1e-3:
            self._rooms_at = now
            rooms = {room.id: len(room.members) for room in hub.rooms}
        beats, self._beats = list(self._beats), set()
        self._queue([bus.EV_ALIVE, hub.online, self.epoch, beats, rooms])

    def sync(self) -> None:
        """Queue the complete session list, for the latest router epoch seen."""
        hub = self.hub
        assert hub is not None
        entries = [
            [ch.key, ch.mid, ch.room.id if ch.room is not None else "", _ip(ch)]
            for bucket in hub.buckets
            for ch in bucket
            if ch.state == AUTHED
        ]
        self.epoch = self.router_epoch
        self.stats["syncs"] += 1
        self._queue([bus.EV_SYNC, self.epoch, entries])
        log.info("worker %s reported its %d sessions to router epoch %x", self.id, len(entries), self.epoch)

    # -- deliveries -------------------------------------------------------------------------------
    def _on_message(self, message: bytes) -> None:
        try:
            topic, envelopes = bus.split(message)
            batch = bus.unpack_all(envelopes)
        except ValueError as exc:
            self.stats["bad_messages"] += 1
            log.warning("ignoring a malformed bus message: %s", exc)
            return
        for msg in batch:
            try:
                self._deliver(topic, msg)
            except (ValueError, TypeError, IndexError, KeyError) as exc:
                self.stats["bad_messages"] += 1
                log.warning("ignoring a malformed bus envelope: %s", exc)

    def _deliver(self, topic: bytes, msg: Any) -> None:
        hub = self.hub
        assert hub is not None
        kind = msg[0]
        if kind == bus.PUSH_ROOM:
            hub.push_room(bus.room_of(topic), msg[1], msg[2])
        elif kind == bus.PUSH_KEYS:
            hub.push_keys(msg[2], msg[1], msg[3])
        elif kind == bus.PUSH_ALL:
            hub.push_all(msg[1], msg[3], msg[2])
        elif kind == bus.STATUS:
            self._status(msg[1], msg[2])
        elif kind == bus.KICK:
            self._kick(msg[1])
        elif kind == bus.RESYNC:
            self.sync()
        else:
            raise ValueError(f"unknown envelope kind {kind!r}")
        self.stats["deliveries"] += 1

    def _status(self, epoch: int, rooms: dict[str, int] | None) -> None:
        assert self.hub is not None
        if epoch != self.router_epoch:
            if self.router_epoch:
                log.info("router epoch changed %x -> %x", self.router_epoch, epoch)
            self.router_epoch = epoch
            self.sync()
        if rooms:
            self.hub.set_room_online(rooms)

    def _kick(self, keys: list[str]) -> None:
        hub = self.hub
        assert hub is not None
        for key in keys:
            channel = hub.buckets.get(key)
            if channel is not None:
                log.info("key %s connected on another worker; kicking %s", key, channel.peer())
                hub.close(channel, notify=True)


def make_cluster_link(cfg: Config, endpoints: Endpoints, name: str) -> ClusterLink:
    """The link a worker under the master uses (call in the worker process, after the fork)."""
    return ZmqLink(cfg, endpoints, name)
