"""The router's side of the bus: an XPUB socket that publishes per loop turn and ends with a mark.

Publishing: the records for one topic in one loop turn go out as one bus message
(topic + msgpack array), in order; a topic that grows past ``limit`` bytes is sent
at once. A turn that asked for a mark ends with one numbered
:class:`~mpim.records.Mark` on the broadcast topic, after everything else, so a
worker that reports that mark has taken every message published before it. Marks
only grow, across router restarts too: a worker keeps the highest mark it saw and
ignores lower ones, so each router numbers its marks from the wall clock in
microseconds, above anything an earlier router can have sent (it would have to
publish a million marks a second to catch up with the clock).

Reading: the XPUB receives, from the forwarder, the workers' subscriptions
(ignored: libzmq applies them) and their :class:`~mpim.records.BusFence` records.
A socket monitor says when the connection to the forwarder drops or comes back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from mpim import bus, records
from mpim.records import BusFence, Mark

log = logging.getLogger("mpim.router")

_NOBLOCK = int(zmq.NOBLOCK)
_decode_fence = records.Decoder(BusFence)


class BusPort:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: zmq.Socket[bytes],
        on_fence: Callable[[str, int], None],
        on_change: Callable[[bool], None],
        limit: int = 1 << 18,
        shard: int = 0,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._send = sock.send
        self._limit = limit
        self.shard = shard  # (several router shards: whose marks these are)
        self._on_fence = on_fence
        self._on_change = on_change
        self._topics: dict[bytes, list[bytes]] = {}
        self._sizes: dict[bytes, int] = {}
        self._scheduled = False
        self._mark_due = False
        self.first_mark = self.next_mark = time.time_ns() // 1000  # (see the module docstring)
        self.connected = False
        self.stats = {"published": 0, "bad_fences": 0}
        self._monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        self._readers: list[bus.SocketReader[Any]] = [
            bus.SocketReader(loop, sock, sock.recv, self._upstream),
            bus.SocketReader(loop, self._monitor, self._recv_event, self._event),
        ]

    def start(self) -> None:
        for reader in self._readers:
            reader.start()

    def close(self) -> None:
        """Send what this turn published, then stop reading (call before closing the socket)."""
        self.flush()
        for reader in self._readers:
            reader.stop()
        self._sock.disable_monitor()
        self._monitor.close(linger=0)

    # -- publishing -------------------------------------------------------------------------
    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def publish(self, topic: bytes, record: bytes) -> None:
        self.stats["published"] += 1
        topics = self._topics
        self._schedule()
        parts = topics.get(topic)
        if parts is None:
            topics[topic] = [record]
            self._sizes[topic] = len(record)
            return
        parts.append(record)
        size = self._sizes[topic] + len(record)
        self._sizes[topic] = size
        if size >= self._limit:
            del topics[topic]
            self._send(topic + records.array(parts), _NOBLOCK)

    def mark(self) -> int:
        """The number of the mark that ends this turn (one is sent even if nothing else is)."""
        self._mark_due = True
        self._schedule()
        return self.next_mark

    def flush(self) -> None:
        self._scheduled = False
        topics, self._topics = self._topics, {}
        self._sizes = {}
        send = self._send
        try:
            for topic, parts in topics.items():
                send(topic + records.array(parts), _NOBLOCK)  # XPUB drops rather than block
            if self._mark_due:
                self._mark_due = False
                send(
                    bus.BROADCAST + records.array([records.encode(Mark(self.next_mark, self.shard))]),
                    _NOBLOCK,
                )
                self.next_mark += 1
        except zmq.ZMQError as exc:
            log.warning("cannot publish on the bus: %s", exc)

    # -- reading ----------------------------------------------------------------------------
    def _upstream(self, message: bytes) -> None:
        if message[:1] in (bus.SUBSCRIBE, bus.UNSUBSCRIBE):
            return
        try:
            fence = _decode_fence(message)
        except records.BadRecord as exc:
            self.stats["bad_fences"] += 1
            log.warning("ignoring an unknown message from the bus: %s", exc)
            return
        self._on_fence(fence.worker, fence.fence)

    def _recv_event(self, flags: int) -> Any:
        return recv_monitor_message(self._monitor, flags)

    def _event(self, event: Any) -> None:
        up = event.get("event") == zmq.EVENT_HANDSHAKE_SUCCEEDED
        if up != self.connected:
            self.connected = up
            self._on_change(up)
