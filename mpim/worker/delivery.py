"""Delivery: pushes by key, to a room and to everyone, written to the connections of this worker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mpim.proto import encode
from mpim.worker.broadcast import Broadcaster
from mpim.worker.wsframe import binary_frame

if TYPE_CHECKING:
    import asyncio

    from mpim.worker.bucket import Buckets
    from mpim.worker.reliable import ReliableDelivery
    from mpim.worker.room import RoomTable


class Delivery:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, buckets: Buckets, rooms: RoomTable, reliable: ReliableDelivery
    ) -> None:
        self.buckets = buckets
        self.rooms = rooms
        self.reliable = reliable
        self.broadcaster = Broadcaster(loop, buckets)

    def push_keys(self, op: int, keys: list[str], body: bytes, seq: int = 0) -> int:
        """Send to the connections with these keys that watch ``op``; returns how many.

        ``seq`` > 0 (a stored push by mid): ack clients get it in the header, held until
        they resumed; everyone else gets goim's frame with seq 0."""
        frame = encode(op, body)
        ws_frame = b""
        sent = 0
        get = self.buckets.get
        for key in keys:
            channel = get(key)
            if channel is None or op not in channel.accepts:
                continue
            if seq and channel.rel is not None:
                self.reliable.push(channel, op, body, seq)
            elif channel.is_ws:
                ws_frame = ws_frame or binary_frame(frame)
                channel.write(ws_frame)
            else:
                channel.write(frame)
            sent += 1
        return sent

    def push_room(self, op: int, room_id: str, body: bytes) -> bool:
        """Queue for every member of a room, watch set ignored; False if no member here."""
        return self.rooms.push(room_id, encode(op, body))

    def push_all(self, op: int, speed: int, body: bytes) -> None:
        """Send to every connection watching ``op``, at most ``speed`` per second (0 = unpaced)."""
        self.broadcaster.submit(op, body, speed)

    def set_room_online(self, counts: dict[str, int]) -> None:
        self.rooms.set_cluster_online(counts)

    def flush(self) -> None:
        """Drain: write queued room batches and broadcasts now."""
        self.broadcaster.finish_now()
        self.rooms.flush_all()

    def stop(self) -> None:
        self.broadcaster.stop()
