"""Delivery: pushes by key, to a room and to everyone, written to the connections of this worker."""

from __future__ import annotations

import time
from collections.abc import Iterable
from itertools import repeat
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
    """``at`` arguments: when the router handed out the push (``time.monotonic()``, 0 = not
    measured), for the push -> write latency metric (:mod:`mpim.worker.meter`)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, buckets: Buckets, rooms: RoomTable, reliable: ReliableDelivery
    ) -> None:
        self.buckets = buckets
        self.rooms = rooms
        self.reliable = reliable
        self.meter = rooms.meter
        self.broadcaster = Broadcaster(loop, buckets, self.meter)

    def push_keys(self, op: int, keys: list[str], body: bytes, at: float = 0.0) -> int:
        """Send to the connections with these keys that watch ``op``; returns how many."""
        return self.push_mids(op, keys, repeat(0), body, at)

    def push_mids(self, op: int, keys: list[str], seqs: Iterable[int], body: bytes, at: float = 0.0) -> int:
        """Like :meth:`push_keys`, ``seqs[i]`` > 0 being the stream seq of the user holding
        ``keys[i]`` (a stored push by mid): ack clients get it in the header, held until they
        resumed; everyone else gets goim's frame with seq 0. One frame is built for all."""
        frame = encode(op, body)
        ws_frame = b""
        sent = ws_sent = 0
        get = self.buckets.get
        for key, seq in zip(keys, seqs, strict=False):  # (push_keys: an endless run of 0)
            channel = get(key)
            if channel is None or op not in channel.accepts:
                continue
            if seq and channel.rel is not None:
                self.reliable.push(channel, op, body, seq)
            elif channel.is_ws:
                ws_frame = ws_frame or binary_frame(frame)
                channel.write(ws_frame)
                ws_sent += 1
            else:
                channel.write(frame)
            sent += 1
        meter = self.meter
        meter.keys_pushes += 1
        meter.keys_deliveries += sent
        meter.keys_bytes += len(frame) * (sent - ws_sent) + len(ws_frame) * ws_sent
        if sent < len(keys):
            self._missed(op, keys)
        if at:  # (the router stamps one push by key or mid in eight)
            meter.latency_keys.observe(int((time.monotonic() - at) * 1e6))
        return sent

    def _missed(self, op: int, keys: list[str]) -> None:
        """Count why some keys got nothing (rare: they left, or do not watch ``op``)."""
        get = self.buckets.get
        for key in keys:
            channel = get(key)
            if channel is None:
                self.meter.keys_offline += 1
            elif op not in channel.accepts:
                self.meter.keys_not_watching += 1

    def push_room(self, op: int, room_id: str, body: bytes, at: float = 0.0) -> bool:
        """Queue for every member of a room, watch set ignored; False if no member here."""
        return self.rooms.push(room_id, encode(op, body), at)

    def push_all(self, op: int, speed: int, body: bytes, at: float = 0.0) -> None:
        """Send to every connection watching ``op``, at most ``speed`` per second (0 = unpaced)."""
        self.broadcaster.submit(op, body, speed, at)

    def set_room_online(self, counts: dict[str, int]) -> None:
        self.rooms.set_cluster_online(counts)

    def flush(self) -> None:
        """Drain: write queued room batches and broadcasts now."""
        self.broadcaster.finish_now()
        self.rooms.flush_all()

    def stop(self) -> None:
        self.broadcaster.stop()
