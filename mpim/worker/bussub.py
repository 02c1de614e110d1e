"""A worker's subscription to its host's bus (:mod:`mpim.bus`): room and broadcast pushes, marks.

How this works:

- **Topics.** One XSUB socket subscribed to the broadcast topic and to the topic of every
  room with local members (or a client about to join): :meth:`BusSubscription.room_opened`
  and :meth:`~BusSubscription.room_closed`, called by the room table.
- **Fences.** After the subscriptions of a loop turn one numbered ``BusFence`` goes
  upstream on the bus. A request that needs a new room carries that fence number
  (:meth:`~BusSubscription.fence_for`), and the router confirms it only after the fence
  came through, so the room is live; a confirmation tells us which fences the router has
  seen (:meth:`~BusSubscription.fence_seen`). Every router shard sees every fence, but what
  each one confirmed is its own: a request to shard K skips a room's fence only if K saw it.
- **Marks.** Room and broadcast pushes come down with the routers' ``Mark`` s, each naming
  the shard that published it; the highest one per shard is reported back once per loop
  turn (``report_mark``: a ``BusSeen`` on that shard's link) so the shard can answer room
  pushes with certainty, and a drain waits for each shard's own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import zmq

from mpim import bus, records
from mpim.records import BusFence, Mark, PushAll, PushRoom

if TYPE_CHECKING:
    import asyncio

    from mpim.config import Config
    from mpim.worker.link import DeliveryTarget

log = logging.getLogger("mpim.link")

_decode_bus = records.Decoder(list[records.BusRecord])


class BusSubscription:
    def __init__(self, cfg: Config, endpoint: str, worker_id: str, stats: dict[str, int]) -> None:
        shards = cfg.router.shards
        self.worker_id = worker_id
        self.stats = stats
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.XSUB)
        self.sub.setsockopt(zmq.RCVHWM, cfg.bus.hwm)
        self.sub.setsockopt(zmq.SNDHWM, cfg.bus.hwm)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(endpoint)
        self.sub.send(bus.SUBSCRIBE + bus.BROADCAST)
        self.loop: asyncio.AbstractEventLoop  # set by start(), in the running loop
        self.delivery: DeliveryTarget | None = None
        self.reader: bus.SocketReader[bytes] | None = None
        self.report_mark: Callable[[int, int], None] = lambda mark, shard: None  # (BusSeen to a shard)
        self._fence = 0  # last bus fence sent (or due this turn)
        self._fence_due = False
        self._fence_seen = [0] * shards  # per shard: the highest fence it confirmed having seen
        self._room_fence: dict[str, int] = {}
        self.marks_seen = [0] * shards  # per shard: its highest mark taken from the bus
        self._marks_reported = [0] * shards
        self._marks_due = False

    @property
    def mark_seen(self) -> int:
        """The highest mark of shard 0 (the router, with one) taken from the bus."""
        return self.marks_seen[0]

    def start(self, loop: asyncio.AbstractEventLoop, delivery: DeliveryTarget) -> None:
        self.loop = loop
        self.delivery = delivery
        self.reader = bus.SocketReader(loop, self.sub, self.sub.recv, self.on_message)
        self.reader.start()

    def stop(self) -> None:
        if self.reader is not None:
            self.reader.stop()

    def close(self) -> None:
        self.stop()
        self.sub.close(linger=0)
        self.ctx.destroy(linger=0)

    # -- topics and fences -------------------------------------------------------------------------
    def room_opened(self, room_id: str) -> None:
        self.sub.send(bus.SUBSCRIBE + bus.room_topic(room_id))
        if not self._fence_due:
            self._fence_due = True
            self._fence += 1
            self.loop.call_soon(self.send_fence)
        self._room_fence[room_id] = self._fence
        if self.reader is not None:
            self.reader.poke()

    def room_closed(self, room_id: str) -> None:
        self.sub.send(bus.UNSUBSCRIBE + bus.room_topic(room_id))
        self._room_fence.pop(room_id, None)
        if self.reader is not None:
            self.reader.poke()

    def send_fence(self) -> None:
        """One fence after this turn's subscriptions (or again, when the router asks)."""
        self._fence_due = False
        with contextlib.suppress(zmq.ZMQError):
            self.sub.send(records.encode(BusFence(self.worker_id, self._fence)), zmq.NOBLOCK)

    def fence_for(self, room: str, shard: int = 0) -> int:
        """The bus fence router shard ``shard`` must have seen before ``room`` is live (0: it is)."""
        fence = self._room_fence.get(room, 0) if room else 0
        return fence if fence > self._fence_seen[shard] else 0

    def fence_seen(self, fence: int, shard: int = 0) -> None:
        """Shard ``shard`` confirmed a request that waited for ``fence``: it has seen that one
        (a room's fence is forgotten once every shard has seen it)."""
        seen = self._fence_seen
        if fence > seen[shard]:
            low = min(seen)
            seen[shard] = fence
            if min(seen) > low:
                low = min(seen)
                self._room_fence = {r: f for r, f in self._room_fence.items() if f > low}

    # -- what comes down ---------------------------------------------------------------------------
    def on_message(self, message: bytes) -> None:
        assert self.delivery is not None
        try:
            self.stats["bus_messages"] += 1
            topic, payload = bus.split(message)
            batch = _decode_bus(payload)
        except (ValueError, records.BadRecord) as exc:
            self.stats["bad_messages"] += 1
            log.warning("ignoring a malformed bus message: %s", exc)
            return
        for record in batch:
            match record:
                case PushRoom():
                    try:
                        self.delivery.push_room(record.op, bus.room_of(topic), record.body, record.at)
                    except ValueError as exc:
                        self.stats["bad_messages"] += 1
                        log.warning("ignoring a room push on %r: %s", topic[:40], exc)
                case PushAll():
                    self.delivery.push_all(record.op, record.speed, record.body, record.at)
                case Mark():
                    self._saw_mark(record.mark, record.shard)

    def _saw_mark(self, mark: int, shard: int) -> None:
        seen = self.marks_seen
        if not 0 <= shard < len(seen):
            self.stats["bad_messages"] += 1
            log.warning("ignoring mark %d of router shard %d (%d shards here)", mark, shard, len(seen))
            return
        if mark > seen[shard]:
            if not self._marks_due:
                self._marks_due = True
                self.loop.call_soon(self._report_marks)
            seen[shard] = mark

    def _report_marks(self) -> None:
        self._marks_due = False
        seen, reported = self.marks_seen, self._marks_reported
        for shard, mark in enumerate(seen):
            if mark > reported[shard]:
                reported[shard] = mark
                self.report_mark(mark, shard)
