"""A worker's link under the master: its router shards and its host's bus, composed.

:class:`HostLink` is the :class:`~mpim.worker.link.ClusterLink` a worker uses under the
master. It is made of:

- one :class:`~mpim.worker.routerlink.RouterLink` per router shard (``[router] shards``;
  :class:`~mpim.worker.shards.RouterLinks`), the stream to that shard (hello, session
  events, the dispatch of what it sends down), made of its
  :class:`~mpim.worker.routercalls.RouterCalls` (the calls in flight, answered in time) and its
  :class:`~mpim.worker.linkreports.LinkReports` (acks, heartbeats, liveness reports);
- a :class:`~mpim.worker.bussub.BusSubscription`, the XSUB socket on the bus (room and
  broadcast topics, fences, marks), shared by the router links: a registration waits for
  its room's fence, a drain for each shard's mark, and marks are reported to the shard
  that published them.

Every session call goes to the link of the shard that owns the connection
(:func:`mpim.slots.owner`); the greeting, the reports, drains and goodbyes go to every
shard; room subscriptions go to the bus.
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
from mpim.worker.shards import RoomTotals, RouterLinks, Shard, ShardTally, Tally, WorkerTally

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
        shards = cfg.router.shards
        self.totals = RoomTotals(shards)
        self.links = RouterLinks([self._link(cfg, Shard(k, shards), hello) for k in range(shards)])
        self.router = self.links[0]  # (shard 0: the router, with one)
        self.router.reports.buffered = self.links.buffered  # (its counters carry every link's)
        self.bus.report_mark = self._report_mark

    def _link(self, cfg: Config, shard: Shard, hello: Hello) -> RouterLink:
        endpoint = self.endpoints.router_of(shard.index)
        return RouterLink(cfg, shard, endpoint, hello, self.id, self.bus, self.stats, self.totals)

    # -- lifecycle -----------------------------------------------------------------------------
    def attach(self, sessions: SessionTarget, delivery: DeliveryTarget, rooms: RoomCounter) -> None:
        loop = asyncio.get_running_loop()
        self.bus.start(loop, delivery)
        for link in self.links:
            tally: Tally = WorkerTally(sessions, rooms) if self.links.count == 1 else ShardTally(rooms)
            link.start(loop, sessions, delivery, rooms, tally)

    async def close(self) -> None:
        """Say goodbye (every shard forgets our sessions at once) and close everything."""
        for link in self.links:
            link.close()
        self.bus.close()

    def _report_mark(self, mark: int, shard: int) -> None:
        self.links[shard].send(records.encode(BusSeen(mark)))

    # -- sessions (their owner shard's) --------------------------------------------------------
    def register(self, channel: Channel, room: str, ip: str) -> None:
        link = self.links.of(channel)
        link.reports.tally.filed(channel.key, room)
        link.calls.register(channel, room, ip)

    def change_room(self, channel: Channel, room: str) -> None:
        link = self.links.of(channel)
        link.reports.tally.filed(channel.key, room)
        link.calls.change_room(channel, room)

    def cancel(self, channel: Channel) -> None:
        self.links.of(channel).calls.cancel(channel)

    def disconnected(self, channel: Channel) -> None:
        self.links.of(channel).disconnected(channel)

    def heartbeat(self, channel: Channel) -> None:
        self.links.of(channel).reports.heartbeat(channel)

    def upstream(self, channel: Channel, op: int, body: bytes) -> None:
        self.links.of(channel).upstream(channel, op, body)

    def resume(
        self, channel: Channel, epoch: str, seq: int, cursor: bool, done: OnReplayed, page: bool = False
    ) -> None:
        self.links.of(channel).calls.resume(channel, epoch, seq, cursor, done, page)

    def ack(self, channel: Channel, seq: int) -> None:
        self.links.of(channel).reports.ack(channel, seq)

    def chat(self, channel: Channel, op: int, body: bytes, msg_id: str, to: int, done: OnAck | None) -> None:
        self.links.of(channel).calls.chat(channel, op, body, msg_id, to, done)

    def online(self, channel: Channel, mids: list[int], done: OnAck) -> None:
        self.links.of(channel).calls.online(channel, mids, done)

    async def drain_barrier(self, timeout: float) -> None:
        """Every shard stops routing to us; wait for each one's mark (all within ``timeout``)."""
        await asyncio.gather(*(link.calls.drain_barrier(timeout) for link in self.links))

    # -- rooms (the bus's) -----------------------------------------------------------------------
    def room_opened(self, room_id: str) -> None:
        self.bus.room_opened(room_id)

    def room_closed(self, room_id: str) -> None:
        self.bus.room_closed(room_id)
        self.totals.forget(room_id)


def make_cluster_link(cfg: Config, endpoints: Endpoints, name: str) -> HostLink:
    """The link a worker under the master uses (call in the worker process, after the fork)."""
    return HostLink(cfg, endpoints, name)
