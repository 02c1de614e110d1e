"""What a worker reports up its router link on its own schedule: acks, heartbeats, ``Alive``.

- **Acks** are folded per device and loop turn: the highest seq of each device this turn
  goes up in one ``Acked`` record at the end of the turn.
- **Heartbeats** are collected and go up with the next ``Alive``.
- **Liveness.** Every ``report_interval`` an ``Alive`` record carries the connection count,
  the keys that heart-beat meanwhile, the worker's and the link's counters and, every
  ``online_interval``, local room counts (the first report carries them, however young the clock).
  With several router shards, each link's counts are its shard's (its
  :class:`~mpim.worker.shards.Tally`) and every one carries the worker's counters (so the
  console of any shard shows them; ``/metrics`` takes them from shard 0 only).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from mpim import records
from mpim.records import Acked, AckEntry, Alive

if TYPE_CHECKING:
    from mpim.config import Config
    from mpim.worker.channel import Channel
    from mpim.worker.link import RoomCounter, SessionTarget
    from mpim.worker.shards import Tally


class LinkReports:
    def __init__(
        self,
        cfg: Config,
        stats: dict[str, int],
        send: Callable[[bytes | None], None],
        encode: Callable[[records.WorkerRecord], bytes | None],
        buffered: Callable[[], int],
    ) -> None:
        self.cfg = cfg
        self.stats = stats  # the link's counters
        self.send = send  # (the link's: dropped while it is down)
        self.encode = encode
        self.buffered = buffered  # bytes waiting on the link
        self.loop: asyncio.AbstractEventLoop  # set by start(), in the running loop
        self.sessions: SessionTarget | None = None
        self.rooms: RoomCounter | None = None
        self.tally: Tally  # set by start()
        self._beats: set[str] = set()
        self._acks: dict[tuple[int, str], int] = {}  # this turn's acks, per device
        self._rooms_at = -math.inf  # the first report carries the counts, however young the clock
        self._alive_handle: asyncio.TimerHandle | None = None

    def start(
        self, loop: asyncio.AbstractEventLoop, sessions: SessionTarget, rooms: RoomCounter, tally: Tally
    ) -> None:
        self.loop = loop
        self.sessions, self.rooms, self.tally = sessions, rooms, tally
        self._alive_handle = loop.call_later(self.cfg.router.report_interval, self._alive)

    def close(self) -> None:
        if self._alive_handle is not None:
            self._alive_handle.cancel()

    def last(self) -> bytes | None:
        """The last ``Alive`` (the last counts, for the metrics); None before start."""
        if self.rooms is None or self.sessions is None:
            return None
        return records.encode(Alive(self.tally.online, [], None, self._stats()))

    # -- session events --------------------------------------------------------------------------
    def ack(self, channel: Channel, seq: int) -> None:
        if not self._acks:
            self.loop.call_soon(self._send_acks)
        key = (channel.mid, channel.key)
        if seq > self._acks.get(key, 0):
            self._acks[key] = seq

    def _send_acks(self) -> None:
        acks, self._acks = self._acks, {}
        if acks:
            self.send(self.encode(Acked([AckEntry(mid, key, seq) for (mid, key), seq in acks.items()])))

    def heartbeat(self, channel: Channel) -> None:
        self._beats.add(channel.key)

    def forget(self, channel: Channel) -> None:
        """The channel closed: its heartbeat since the last report is not reported."""
        self._beats.discard(channel.key)
        self.tally.gone(channel.key)

    # -- liveness ----------------------------------------------------------------------------------
    def _alive(self) -> None:
        assert self.sessions is not None and self.rooms is not None
        cfg = self.cfg.router
        self._alive_handle = self.loop.call_later(cfg.report_interval, self._alive)
        rooms = None
        now = self.loop.time()
        if now - self._rooms_at >= cfg.online_interval - 1e-3:
            self._rooms_at = now
            rooms = self.tally.local_counts()
        beats, self._beats = list(self._beats), set()
        self.send(records.encode(Alive(self.tally.online, beats, rooms, self._stats())))

    def _stats(self) -> dict[str, int]:
        """The worker's counters (every report: the metrics stay fresh) and the links'."""
        assert self.rooms is not None
        return {
            **self.rooms.counters(),
            **{f"link_{k}": v for k, v in self.stats.items()},
            "link_buffer": self.buffered(),
        }
