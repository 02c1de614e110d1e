"""Rooms and the room batcher.

A room is the set of its member channels (O(1) join and leave, exact local
count), kept as two dicts, TCP and WebSocket members, each mapping a channel to
its bound ``write``: a flush is one call per member and no lookups.

Pushed room frames wait in the room's ``pending`` list until the room is
flushed: one write per member of the concatenated frames (TCP) or of one op-9
WebSocket message built once (goim's op Raw), the same bytes for every member,
at once when ``batch`` frames wait (unless an adaptive window is widened, see
below). Otherwise when is the mode:

- ``fixed`` (goim's job): ``batch_delay`` after the first pending frame.
- ``adaptive`` (the default): a frame for a room that was not flushed within the
  current *window* goes out at the end of this loop turn (``call_soon``, before
  any timer), so a quiet room gets every message at once and a burst that
  arrives in one bus read is one write. A room flushed less than a window ago
  waits until the window since its last flush has passed: at most one write per
  member per window. The window (:mod:`mpim.worker.window`) is ``batch_delay``
  while the worker keeps up and widens up to ``max_delay`` while writing room
  flushes keeps its loop busy, so an overloaded worker writes more messages per
  write instead of queueing them (``batch`` does not cut a widened window short:
  a hot room would otherwise undo it), and a message waits at most ``max_delay``
  plus the time the loop takes to get to it. Order is kept: frames leave a room
  in the order they arrived.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from mpim.proto import Op, encode_header
from mpim.worker.meter import Meter
from mpim.worker.window import Window
from mpim.worker.wsframe import binary_frame

if TYPE_CHECKING:
    from mpim.config import RoomSection
    from mpim.worker.channel import Channel

RoomHook = Callable[[str], None]
Write = Callable[[bytes], object]

FIXED, ADAPTIVE = "fixed", "adaptive"


class Room:
    __slots__ = (
        "cluster_online",
        "first_at",
        "flush_handle",
        "fresh",
        "id",
        "last_flush",
        "newest_join",
        "pending",
        "reserved",
        "tcp",
        "ws",
    )

    def __init__(self, room_id: str) -> None:
        self.id = room_id
        self.tcp: dict[Channel, Write] = {}  # member -> its bound Channel.write
        self.ws: dict[Channel, Write] = {}
        self.pending: list[bytes] = []
        self.flush_handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self.last_flush = float("-inf")
        self.cluster_online = -1
        self.reserved = 0  # clients about to join (waiting for the router)
        self.first_at = 0.0  # when the router accepted the oldest pending frame (metrics)
        # members that joined lately -> when (time.monotonic()): a push the router accepted
        # before a member joined is not that member's (see RoomTable.push)
        self.fresh: dict[Channel, float] = {}
        self.newest_join = 0.0  # the latest of them

    def __len__(self) -> int:
        return len(self.tcp) + len(self.ws)

    @property
    def members(self) -> set[Channel]:
        """A copy of the member set."""
        return {*self.tcp, *self.ws}

    @property
    def online(self) -> int:
        """Cluster-wide count when the router told us one, else the local count."""
        return self.cluster_online if self.cluster_online >= 0 else len(self)


def ws_batch(inner: bytes) -> bytes:
    """One WebSocket message: an op-9 header, then the concatenated frames (TCP sends them bare)."""
    return binary_frame(encode_header(Op.RAW, len(inner)) + inner)


class RoomTable:
    """All rooms of one worker, with the batcher that flushes them."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        cfg: RoomSection,
        on_open: RoomHook | None = None,
        on_close: RoomHook | None = None,
        meter: Meter | None = None,
    ) -> None:
        self._loop = loop
        self.meter = meter or Meter()
        self._rooms: dict[str, Room] = {}
        self._on_open = on_open
        self._on_close = on_close
        self.window = Window(cfg.batch_delay, cfg.max_delay, loop.time())
        self.reconfigure(cfg)

    def reconfigure(self, cfg: RoomSection) -> None:
        self.batch = cfg.batch
        self.batch_delay = cfg.batch_delay
        self.adaptive = cfg.mode == ADAPTIVE
        self.window.retune(cfg.batch_delay, cfg.max_delay)

    def __len__(self) -> int:
        return len(self._rooms)

    def __iter__(self) -> Iterator[Room]:
        return iter(tuple(self._rooms.values()))

    def get(self, room_id: str) -> Room | None:
        return self._rooms.get(room_id)

    def counters(self) -> dict[str, int]:
        """The batcher's state for the worker's stats (the window in microseconds, the last period's
        busy %); flushes, frames and deliveries are counted by the meter."""
        return {
            "room_window_us": round((self.window.value if self.adaptive else self.batch_delay) * 1e6),
            "room_busy_pct": round(self.window.load * 100),
        }

    # -- membership ---------------------------------------------------------------------------
    def _open(self, room_id: str) -> Room:
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = Room(room_id)
            if self._on_open is not None:
                self._on_open(room_id)
        return room

    def join(self, room_id: str, channel: Channel) -> Room:
        room = self._open(room_id)
        if room.pending:  # (queued before the join: the members before it get them)
            self.flush(room)
        (room.ws if channel.is_ws else room.tcp)[channel] = channel.write
        room.fresh[channel] = room.newest_join = time.monotonic()
        return room

    def reserve(self, room_id: str) -> Room:
        """Open the room (subscribing it on the bus) for a client that joins once confirmed."""
        room = self._open(room_id)
        room.reserved += 1
        return room

    def unreserve(self, room: Room) -> None:
        room.reserved -= 1
        self._maybe_discard(room)

    def leave(self, room: Room, channel: Channel) -> None:
        (room.ws if channel.is_ws else room.tcp).pop(channel, None)
        room.fresh.pop(channel, None)
        self._maybe_discard(room)

    def _maybe_discard(self, room: Room) -> None:
        if not (room.tcp or room.ws) and room.reserved <= 0 and self._rooms.get(room.id) is room:
            self._discard(room)

    def _discard(self, room: Room) -> None:
        if room.flush_handle is not None:
            room.flush_handle.cancel()
            room.flush_handle = None
        self.meter.room_gone += len(room.pending)
        room.pending = []
        del self._rooms[room.id]
        if self._on_close is not None:
            self._on_close(room.id)

    # -- batching -------------------------------------------------------------------------------
    def push(self, room_id: str, frame: bytes, at: float = 0.0) -> bool:
        """Queue an encoded frame for a room; False if no local member is in it.

        ``at``: when the router accepted the push (``time.monotonic()``, one clock for the host),
        for the latency metric, and so that a member who joined after it does not get it: a
        worker that was paused (or slow) reads its bus backlog after the joins it answered
        meanwhile, and a client that reconnected would get a push twice, once on each connection."""
        room = self._rooms.get(room_id)
        if room is None:
            self.meter.room_absent += 1
            return False
        if room.fresh and at:
            if at < room.newest_join:  # (someone joined after the router accepted this push)
                if self._excluded(room, frame, at):
                    return True
            elif at > room.newest_join + 1.0:  # (every join is older than what comes in now)
                room.fresh.clear()
        pending = room.pending
        if not pending:
            room.first_at = at or time.monotonic()
        pending.append(frame)
        if len(pending) >= self.batch and (not self.adaptive or self.window.value <= self.window.floor):
            self.flush(room)  # (a loaded adaptive worker keeps collecting until the window ends)
        elif room.flush_handle is None:
            loop = self._loop
            if self.adaptive:
                now = loop.time()
                due = room.last_flush + self.window.value
                if due <= now:  # quiet room: this loop turn
                    room.flush_handle = loop.call_soon(self.flush, room)
                else:  # flushed less than a window ago: wait for the rest of it
                    room.flush_handle = loop.call_at(due, self.flush, room)
            elif self.batch_delay > 0:
                room.flush_handle = loop.call_later(self.batch_delay, self.flush, room)
            else:
                room.flush_handle = loop.call_soon(self.flush, room)
        return True

    def _excluded(self, room: Room, frame: bytes, at: float) -> bool:
        """A frame older than some members' joins: written now to the others (after what is
        pending, to keep the order); True if so. Joins are forgotten once the frames coming in
        are a second younger than all of them (pushes of several router shards interleave)."""
        late = [ch for ch, joined in room.fresh.items() if joined > at]
        if not late:
            return False
        self.flush(room)
        skip = set(late)
        tcp = [w for ch, w in room.tcp.items() if ch not in skip]
        ws = [w for ch, w in room.ws.items() if ch not in skip]
        for write in tcp:
            write(frame)
        message = ws_batch(frame) if ws else b""
        for write in ws:
            write(message)
        self.meter.flushed(1, len(tcp) + len(ws), len(frame), len(ws), len(message), at)
        return True

    def flush(self, room: Room) -> None:
        """Write what the room has pending, now."""
        if room.flush_handle is not None:
            room.flush_handle.cancel()
            room.flush_handle = None
        frames = room.pending
        if not frames:
            return
        room.pending = []
        inner = frames[0] if len(frames) == 1 else b"".join(frames)
        members, ws_members = len(room.tcp) + len(room.ws), len(room.ws)
        if self.adaptive:
            started = room.last_flush = self._loop.time()
            ws_size = self._write(room, inner)
            self.window.flushed(started, self._loop.time())
        else:
            ws_size = self._write(room, inner)
        self.meter.flushed(len(frames), members, len(inner), ws_members, ws_size, room.first_at)

    def _write(self, room: Room, inner: bytes) -> int:
        """One write per member: the frames as they are (TCP), one op-9 message (WebSocket).
        Returns the WebSocket message's size (0: no WebSocket member).

        The loops run over copies: a write may cut a slow consumer, which leaves the room.
        """
        if room.tcp:
            for write in tuple(room.tcp.values()):
                write(inner)
        if room.ws:
            message = ws_batch(inner)
            for write in tuple(room.ws.values()):
                write(message)
            return len(message)
        return 0

    def flush_all(self) -> None:
        for room in tuple(self._rooms.values()):
            self.flush(room)

    def set_cluster_online(self, counts: dict[str, int]) -> None:
        for room_id, count in counts.items():
            room = self._rooms.get(room_id)
            if room is not None:
                room.cluster_online = count
