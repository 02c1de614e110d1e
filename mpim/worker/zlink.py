"""A worker's link under the master: its router and its host's bus, composed.

:class:`HostLink` is the :class:`~mpim.worker.link.ClusterLink` a worker uses under the
master. It is made of:

- a :class:`~mpim.worker.routerlink.RouterLink`, the stream to the router (hello, session
  events, the dispatch of what the router sends down), made of its
  :class:`~mpim.worker.routercalls.RouterCalls` (the calls in flight, answered in time) and its
  :class:`~mpim.worker.linkreports.LinkReports` (acks, heartbeats, liveness reports);
- a :class:`~mpim.worker.bussub.BusSubscription`, the XSUB socket on the bus (room and
  broadcast topics, fences, marks), shared by the router link: a registration waits for
  its room's fence, a drain for the router's mark, and marks are reported to the router.

Every session call goes to the router link (its calls or its reports); room subscriptions go to the bus.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

from mpim import records
from mpim.config import Config
from mpim.records import BusSeen, Hello
from mpim.runtime import Endpoints, server_name
from mpim.worker.bussub import BusSubscription
from mpim.worker.routerlink import RouterLink

if TYPE_CHECKING:
    from mpim.worker.channel import Channel
    from mpim.worker.link import DeliveryTarget, OnAck, OnReplayed, RoomCounter, SessionTarget


class HostLink:
    def __init__(self, cfg: Config, endpoints: Endpoints, name: str) -> None:
        self.endpoints = endpoints.configured(cfg)
        self.cfg = cfg
        self.host = server_name(cfg)
        self.pid = os.getpid()
        # The name is the worker slot; our id adds the pid, so a ".<pid>" suffix is redundant.
        self.name = name.removesuffix(f".{self.pid}")
        self.id = f"{self.host}/{self.name}/{self.pid}"
        self.stats = dict.fromkeys(
            (
                *("bad_records", "bad_messages", "syncs", "dropped_reports", "bus_messages"),
                *("chat_refused", "call_timeouts"),
            ),
            0,
        )
        self.bus = BusSubscription(cfg, self.endpoints.bus_out, self.id, self.stats)
        hello = Hello(self.host, self.name, self.pid)
        self.router = RouterLink(cfg, self.endpoints.router, hello, self.id, self.bus, self.stats)
        self.bus.report_mark = self._report_mark

    # -- lifecycle -----------------------------------------------------------------------------
    def attach(self, sessions: SessionTarget, delivery: DeliveryTarget, rooms: RoomCounter) -> None:
        loop = asyncio.get_running_loop()
        self.bus.start(loop, delivery)
        self.router.start(loop, sessions, delivery, rooms)

    async def close(self) -> None:
        """Say goodbye (the router forgets our sessions at once) and close everything."""
        self.router.close()
        self.bus.close()

    def _report_mark(self, mark: int) -> None:
        self.router.send(records.encode(BusSeen(mark)))

    # -- sessions (the router's) ---------------------------------------------------------------
    def register(self, channel: Channel, room: str, ip: str) -> None:
        self.router.calls.register(channel, room, ip)

    def change_room(self, channel: Channel, room: str) -> None:
        self.router.calls.change_room(channel, room)

    def cancel(self, channel: Channel) -> None:
        self.router.calls.cancel(channel)

    def disconnected(self, channel: Channel) -> None:
        self.router.disconnected(channel)

    def heartbeat(self, channel: Channel) -> None:
        self.router.reports.heartbeat(channel)

    def upstream(self, channel: Channel, op: int, body: bytes) -> None:
        self.router.upstream(channel, op, body)

    def resume(
        self, channel: Channel, epoch: str, seq: int, cursor: bool, done: OnReplayed, page: bool = False
    ) -> None:
        self.router.calls.resume(channel, epoch, seq, cursor, done, page)

    def ack(self, channel: Channel, seq: int) -> None:
        self.router.reports.ack(channel, seq)

    def chat(self, channel: Channel, op: int, body: bytes, msg_id: str, to: int, done: OnAck | None) -> None:
        self.router.calls.chat(channel, op, body, msg_id, to, done)

    def online(self, channel: Channel, mids: list[int], done: OnAck) -> None:
        self.router.calls.online(channel, mids, done)

    async def drain_barrier(self, timeout: float) -> None:
        await self.router.calls.drain_barrier(timeout)

    # -- rooms (the bus's) -----------------------------------------------------------------------
    def room_opened(self, room_id: str) -> None:
        self.bus.room_opened(room_id)

    def room_closed(self, room_id: str) -> None:
        self.bus.room_closed(room_id)


def make_cluster_link(cfg: Config, endpoints: Endpoints, name: str) -> HostLink:
    """The link a worker under the master uses (call in the worker process, after the fork)."""
    return HostLink(cfg, endpoints, name)
