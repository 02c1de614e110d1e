"""Rooms and the room batcher.

A room is a set of member channels (O(1) join and leave, exact local count).
Pushed room frames wait in the room's ``pending`` list and are flushed as one
write per member when ``batch`` frames are waiting or ``batch_delay`` has passed,
whichever comes first. A flush encodes once: the concatenated frames for TCP
members and one op-9 WebSocket message for WebSocket members, the same bytes
for every member (goim's op Raw).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from mpim.proto import Op, encode_header
from mpim.worker.meter import Meter
from mpim.worker.wsframe import binary_frame

if TYPE_CHECKING:
    from mpim.worker.channel import Channel

RoomHook = Callable[[str], None]


class Room:
    __slots__ = (
        "cluster_online",
        "first_at",
        "flush_handle",
        "id",
        "members",
        "pending",
        "reserved",
        "ws_members",
    )

    def __init__(self, room_id: str) -> None:
        self.id = room_id
        self.members: set[Channel] = set()
        self.pending: list[bytes] = []
        self.flush_handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self.cluster_online = -1
        self.reserved = 0  # clients about to join (waiting for the router)
        self.first_at = 0.0  # when the router accepted the oldest pending frame (metrics)
        self.ws_members = 0  # WebSocket members (the bytes metric, without a count per delivery)

    @property
    def online(self) -> int:
        """Cluster-wide count when the router told us one, else the local count."""
        return self.cluster_online if self.cluster_online >= 0 else len(self.members)


def ws_batch(inner: bytes) -> bytes:
    """One WebSocket message: an op-9 header, then the concatenated frames (TCP sends them bare)."""
    return binary_frame(encode_header(Op.RAW, len(inner)) + inner)


class RoomTable:
    """All rooms of one worker, with the batcher that flushes them."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: int,
        batch_delay: float,
        on_open: RoomHook | None = None,
        on_close: RoomHook | None = None,
        meter: Meter | None = None,
    ) -> None:
        self._loop = loop
        self.meter = meter or Meter()
        self.batch = batch
        self.batch_delay = batch_delay
        self._rooms: dict[str, Room] = {}
        self._on_open = on_open
        self._on_close = on_close

    def __len__(self) -> int:
        return len(self._rooms)

    def __iter__(self) -> Iterator[Room]:
        return iter(tuple(self._rooms.values()))

    def get(self, room_id: str) -> Room | None:
        return self._rooms.get(room_id)

    def _open(self, room_id: str) -> Room:
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = Room(room_id)
            if self._on_open is not None:
                self._on_open(room_id)
        return room

    def join(self, room_id: str, channel: Channel) -> Room:
        room = self._open(room_id)
        if channel not in room.members:
            room.members.add(channel)
            room.ws_members += channel.is_ws
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
        if channel in room.members:
            room.members.discard(channel)
            room.ws_members -= channel.is_ws
        self._maybe_discard(room)

    def _maybe_discard(self, room: Room) -> None:
        if not room.members and room.reserved <= 0 and self._rooms.get(room.id) is room:
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

    def push(self, room_id: str, frame: bytes, at: float = 0.0) -> bool:
        """Queue an encoded frame for a room; False if no local member is in it.

        ``at``: when the router accepted the push (``time.monotonic()``), for the latency metric."""
        room = self._rooms.get(room_id)
        if room is None:
            self.meter.room_absent += 1
            return False
        if not room.pending:
            room.first_at = at or time.monotonic()
        room.pending.append(frame)
        if len(room.pending) >= self.batch:
            self.flush(room)
        elif room.flush_handle is None:
            if self.batch_delay > 0:
                room.flush_handle = self._loop.call_later(self.batch_delay, self.flush, room)
            else:
                room.flush_handle = self._loop.call_soon(self.flush, room)
        return True

    def flush(self, room: Room) -> None:
        if room.flush_handle is not None:
            room.flush_handle.cancel()
            room.flush_handle = None
        frames = room.pending
        if not frames:
            return
        room.pending = []
        inner = frames[0] if len(frames) == 1 else b"".join(frames)
        ws_bytes = b""  # built at the first WebSocket member, then shared
        members = tuple(room.members)
        for channel in members:
            if channel.is_ws:
                ws_bytes = ws_bytes or ws_batch(inner)
                channel.write(ws_bytes)
            else:
                channel.write(inner)
        self.meter.flushed(
            len(frames), len(members), len(inner), room.ws_members, len(ws_bytes), room.first_at
        )

    def flush_all(self) -> None:
        for room in tuple(self._rooms.values()):
            self.flush(room)

    def set_cluster_online(self, counts: dict[str, int]) -> None:
        for room_id, count in counts.items():
            room = self._rooms.get(room_id)
            if room is not None:
                room.cluster_online = count
