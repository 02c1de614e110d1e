"""The :class:`~mpim.router.fabric.Fabric` of a router shard on a host of a cluster on Redis.

How this works. It puts the two fabrics it is made of side by side: the
:class:`~mpim.router.shardfabric.ShardFabric` (the other shards of this host, one hop away)
and the :class:`~mpim.router.redisfabric.RedisFabric` (the other hosts, over Redis). A push
goes to both at once and its answer adds them up:

- **by user**: each owner shard stores and hands out its users' part, as on one host; the
  shard that received the push then publishes the stored message (with every user's seq) to
  the other hosts that hold some of the users.
- **by key**: the other shards are asked and the other hosts holding the keys are told, in
  parallel; a stored message handed out again (a private message's copy) the same way.
- **rooms and everyone**: published on Redis, as with one router; shard 0 of every host
  reads the room and broadcast channels and relays them to its bus (this host's included).
- **connects**: the key is claimed on the host (its keeper shard), then filed in Redis
  (another host's user may hold it): denied if either says so.

Every shard files its own sessions in Redis, renews the host's lease and reads the host's
channel (:class:`~mpim.router.cluster.HostCluster`); shard 0 speaks for the host (its
lease's counts, its room counts, the room channels: a room that got its first member on
another shard is asked of shard 0, one hop, before the join is confirmed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mpim.cluster.directory import Host, Totals
from mpim.records import SessionRow, ShardAnswer, ShardCall, ShardRooms
from mpim.router.errors import Refused
from mpim.router.fabric import Here
from mpim.router.shardfabric import ShardFabric

if TYPE_CHECKING:
    from mpim.router.cluster import HostCluster
    from mpim.router.redisfabric import RedisFabric
    from mpim.router.shardlink import ShardPeers
    from mpim.router.shardviews import ShardViews
    from mpim.router.streams import Stored

log = logging.getLogger("mpim.cluster")

VOICE = 0  # the shard that speaks for the host (room and broadcast channels, counts)


class ShardRedisFabric:
    def __init__(self, shards: ShardFabric, hosts: RedisFabric, cluster: HostCluster) -> None:
        self.shards = shards
        self.hosts_ = hosts
        self.cluster = cluster
        self.site = shards.site
        self.loop = shards.site.loop
        self.name = hosts.name
        self.stats = hosts.stats
        cluster.host_numbers = shards.views.host_numbers

    @property
    def views(self) -> ShardViews:
        return self.shards.views

    @property
    def peers(self) -> ShardPeers | None:
        return self.shards.peers

    @peers.setter
    def peers(self, peers: ShardPeers | None) -> None:
        self.shards.peers = peers

    @property
    def voice(self) -> bool:
        return self.site.shard == VOICE

    # -- this shard's sessions -------------------------------------------------------------------
    def file(self, key: str, mid: int) -> asyncio.Future[int | None]:
        claim = self.shards.file(key, mid)
        if claim is None:
            return self.cluster.file(key, mid)
        return self.loop.create_task(self._file(claim, key, mid))

    async def _file(self, claim: asyncio.Future[int | None], key: str, mid: int) -> int | None:
        held = await claim
        if held is not None:  # (another user holds the key on this host: nothing filed anywhere)
            return held
        return await self.cluster.file(key, mid)

    def unfile(self, key: str, mid: int) -> None:
        self.shards.unfile(key, mid)
        self.cluster.unfile(key, mid)

    def room_opened(self, room: str) -> asyncio.Future[Any] | None:
        if self.voice:
            return self.cluster.crosshost.room_opened(room)
        return self._ask_voice([room]) if room else None

    def _ask_voice(self, rooms: list[str]) -> asyncio.Future[Any]:
        """Shard 0 listens on these rooms' channels; done once it said so (or could not be
        reached: it takes them from its next count of the host's rooms)."""
        out: asyncio.Future[Any] = self.loop.create_future()

        def then(call: asyncio.Future[ShardAnswer]) -> None:
            exc = call.exception() if not call.cancelled() else None
            if exc is not None:
                log.debug("router shard %d: rooms %s not opened across hosts yet: %s", VOICE, rooms, exc)
            if not out.done():
                out.set_result(None)

        self.site.peers.call(VOICE, functools.partial(ShardRooms, rooms=rooms)).add_done_callback(then)
        return out

    def sessions_changed(self) -> None:
        self.shards.sessions_changed()
        rooms = list(self.site.store.room_counts())
        if self.voice:
            for room in rooms:
                self.cluster.crosshost.room_opened(room)
        elif rooms and self.site.link is not None:
            self._ask_voice(rooms)
        self.cluster.rebuild_soon()

    def refile(self, keeper: int) -> None:
        self.shards.refile(keeper)

    def shard_gone(self, shard: int) -> None:
        self.shards.shard_gone(shard)

    def refusal(self) -> str:
        return self.cluster.refusal()

    # -- pushes --------------------------------------------------------------------------------
    def push_keys(self, local: int, op: int, keys: list[str], body: bytes) -> asyncio.Future[int]:
        here = self.shards.push_keys(local, op, keys, body)
        return self.loop.create_task(self._added(here, self.hosts_.publish_keys(op, keys, body)))

    def push_mids(self, op: int, mids: list[int], body: bytes) -> asyncio.Future[Stored]:
        stored = self.shards.push_mids(op, mids, body)  # (Refused now if an owner is out of reach)
        return self.loop.create_task(self._published(stored, op, list(dict.fromkeys(mids)), body))

    async def _published(self, stored: Awaitable[Stored], op: int, mids: list[int], body: bytes) -> Stored:
        count, seqs = await stored
        elsewhere = self.hosts_.publish_mids(op, mids, [seqs.get(mid, 0) for mid in mids], body)
        return await self.hosts_.with_remote(count, elsewhere), seqs

    def deliver_mids(
        self, local: int, op: int, mids: list[int], seqs: list[int], body: bytes
    ) -> Awaitable[int]:
        here = self.shards.deliver_mids(local, op, mids, seqs, body)
        return self._added(here, self.hosts_.publish_mids(op, mids, seqs, body))

    async def _added(self, here: int | Awaitable[int], elsewhere: Awaitable[int]) -> int:
        """This host's count (its shards') plus the other hosts', asked at the same time."""
        remote = asyncio.ensure_future(elsewhere)
        try:
            local = here if isinstance(here, int) else await here
        except BaseException:
            remote.add_done_callback(_retrieved)
            raise
        return await self.hosts_.with_remote(local, remote)

    def push_room(self, op: int, room: str, body: bytes, here: Here) -> asyncio.Future[None]:
        return self.hosts_.push_room(op, room, body, here)

    def push_all(
        self, op: int, speed: int, body: bytes, here: Callable[[int], asyncio.Future[None]]
    ) -> asyncio.Future[None]:
        return self.hosts_.push_all(op, speed, body, here)

    # -- numbers ---------------------------------------------------------------------------------
    def room_online(self, room: str) -> int:
        """This shard's members (each worker sums the shards' counts) and, told by shard 0 only,
        the other hosts'."""
        cluster = self.cluster
        own = self.site.store.online(room)
        return own + cluster.online.get(room, 0) if self.voice and cluster.up else own

    async def online_elsewhere(self, mids: list[int]) -> set[int]:
        here, there = await asyncio.gather(
            self.shards.online_elsewhere(mids), self.hosts_.online_elsewhere(mids)
        )
        return here | there

    async def online_rooms(self, rooms: list[str]) -> dict[str, int]:
        here = await self.shards.online_rooms(rooms)
        there = await self.cluster.directory.online(rooms, exclude=self.name)
        return {room: here.get(room, 0) + there.get(room, 0) for room in rooms}

    async def top_rooms(self, prefix: str, limit: int) -> list[tuple[str, int]]:
        return await self.hosts_.top_rooms(prefix, limit)  # (it writes this host's counts first)

    async def hosts(self) -> list[Host]:
        """The live hosts, this one with its current counts over its shards."""
        totals = await self.shards.totals()
        me = dataclasses.replace(self.cluster.info(), conns=totals.conn_count, ips=totals.ip_count)
        hosts = await self.cluster.directory.servers()
        return [h._replace(info=me) if h.name == self.name else h for h in hosts]

    async def totals(self) -> Totals:
        hosts = await self.hosts()
        return Totals(sum(h.info.ips for h in hosts), sum(h.info.conns for h in hosts))

    def worker_conns(self) -> Awaitable[dict[str, int]]:
        return self.shards.worker_conns()

    def sessions(self, key: str, mid: int) -> Awaitable[list[SessionRow]]:
        return self.shards.sessions(key, mid)

    # -- calls from the other shards -------------------------------------------------------------
    def serve(self, call: ShardCall) -> ShardAnswer | asyncio.Future[ShardAnswer]:
        match call:
            case ShardRooms():
                return self.loop.create_task(self._open(call))
        return self.shards.serve(call)

    async def _open(self, call: ShardRooms) -> ShardAnswer:
        if not self.voice:
            raise Refused(-400, f"router shard {self.site.shard} does not listen on rooms for the host")
        pending = [f for f in map(self.cluster.crosshost.room_opened, call.rooms) if f is not None]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return ShardAnswer(call.req)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


__all__ = ["ShardRedisFabric"]
