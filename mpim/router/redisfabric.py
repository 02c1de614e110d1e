"""The Redis :class:`~mpim.router.fabric.Fabric`: the other hosts of a cluster on one Redis.

What this host files and leases is :class:`~mpim.router.cluster.HostCluster`'s part, what
it publishes and listens to :class:`~mpim.router.crosshost.CrossHost`'s; this class answers
the router's pieces with both: pushes that concern other hosts
go over Redis (a room or broadcast push from every host, this one included, so all take
it in one order), answers add what the other hosts took, and a Redis failure is a clear
-503 naming what was done on this host.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from mpim.cluster import ClusterError
from mpim.cluster.directory import Host, Totals
from mpim.records import RemoteAll, RemoteKeys, RemoteMids, RemoteRoom
from mpim.router.errors import Refused
from mpim.router.fabric import Here
from mpim.router.store import SessionStore

if TYPE_CHECKING:
    from mpim.router.cluster import HostCluster
    from mpim.router.crosshost import CrossHost
    from mpim.router.streams import Stored, UserStreams


class RedisFabric:
    def __init__(
        self,
        cluster: HostCluster,
        crosshost: CrossHost,
        store: SessionStore,
        streams: UserStreams,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.cluster = cluster
        self.crosshost = crosshost
        self.store = store
        self.streams = streams
        self.loop = loop
        self.name = cluster.name
        self.stats = cluster.stats

    # -- this host's sessions (filed by the cluster) -----------------------------------------------
    def file(self, key: str, mid: int) -> asyncio.Future[int | None]:
        return self.cluster.file(key, mid)

    def unfile(self, key: str, mid: int) -> None:
        self.cluster.unfile(key, mid)

    def room_opened(self, room: str) -> asyncio.Future[object] | None:
        return self.crosshost.room_opened(room)

    def refusal(self) -> str:
        return self.cluster.refusal()

    # -- pushes ---------------------------------------------------------------------------------
    def sessions_changed(self) -> None:
        # a worker's full report files members without a join (after a router restart, say):
        # listen on their rooms' channels now, not at the next count refresh
        for room in self.store.room_counts():
            self.crosshost.room_opened(room)
        self.cluster.rebuild_soon()

    def push_keys(self, local: int, op: int, keys: list[str], body: bytes) -> asyncio.Future[int]:
        return self.loop.create_task(self.with_remote(local, self.publish_keys(op, keys, body)))

    def push_mids(self, op: int, mids: list[int], body: bytes) -> asyncio.Future[Stored]:
        return self.loop.create_task(self.streams.push_mids(op, mids, body))

    def deliver_mids(
        self, local: int, op: int, mids: list[int], seqs: list[int], body: bytes
    ) -> Awaitable[int]:
        return self.with_remote(local, self.publish_mids(op, mids, seqs, body))

    def push_room(self, op: int, room: str, body: bytes, here: Here) -> asyncio.Future[None]:
        # one order for every host: each one (this one too) takes it from Redis
        return self.loop.create_task(self._published(self.publish_room(op, room, body)))

    def push_all(
        self, op: int, speed: int, body: bytes, here: Callable[[int], asyncio.Future[None]]
    ) -> asyncio.Future[None]:
        # every host, this one included, takes its share from Redis
        return self.loop.create_task(self._published(self.publish_all(op, speed, body)))

    async def _published(self, remote: Awaitable[int]) -> None:
        await self.with_remote(0, remote)

    async def with_remote(self, local: int, remote: Awaitable[int]) -> int:
        """Add what other hosts took; a Redis failure is a clear error naming what was done here."""
        try:
            found = local + int(await remote)
        except (ClusterError, RedisError, OSError) as exc:
            self.cluster.lost(exc)
            raise Refused(-503, f"delivered on this host only ({local} connections): Redis: {exc}") from None
        partial = self.cluster.answered()
        if partial:  # (Redis answered, but the view of the other hosts is not whole yet)
            raise Refused(-503, f"delivered on this host only ({local} connections): {partial}")
        return found

    async def online_elsewhere(self, mids: list[int]) -> set[int]:
        """Of these users, those with a session on another host (none known while Redis is out)."""
        try:
            found = await asyncio.gather(*(self.cluster.directory.servers_of_mids([mid]) for mid in mids))
        except (ClusterError, RedisError, OSError) as exc:  # this host's answer, the rest unknown
            self.cluster.lost(exc)
            return set()
        return {mid for mid, servers in zip(mids, found, strict=False) if servers}

    # -- cluster-wide numbers (this host's own are read here, current) -------------------------------
    def room_online(self, room: str) -> int:
        return self.store.online(room) + (self.cluster.online.get(room, 0) if self.cluster.up else 0)

    async def online_rooms(self, rooms: list[str]) -> dict[str, int]:
        remote = await self.cluster.directory.online(rooms, exclude=self.name)
        online = self.store.online
        return {room: remote.get(room, 0) + online(room) for room in rooms}

    async def top_rooms(self, prefix: str, limit: int) -> list[tuple[str, int]]:
        await self.cluster.put_online()  # (the ranking is Redis's: this host's counts as of now)
        return await self.cluster.directory.top_rooms(prefix, limit)

    async def hosts(self) -> list[Host]:
        """The live hosts, this one with its current counts."""
        me = self.cluster.info()
        return [
            h._replace(info=me) if h.name == self.name else h for h in await self.cluster.directory.servers()
        ]

    def worker_conns(self) -> None:
        return None

    def sessions(self, key: str, mid: int) -> None:
        return None

    async def totals(self) -> Totals:
        hosts = await self.hosts()
        return Totals(sum(h.info.ips for h in hosts), sum(h.info.conns for h in hosts))

    # -- the other hosts' part of a push ------------------------------------------------------------
    async def publish_keys(self, op: int, keys: list[str], body: bytes) -> int:
        """Keys held on other hosts; returns how many."""
        where = await self.cluster.directory.server_of_keys(keys)
        groups: dict[str, list[str]] = {}
        for key, server in where.items():
            if server != self.name:
                groups.setdefault(server, []).append(key)
        for server, group in groups.items():
            await self.crosshost.publish(self.crosshost.host_channel(server), RemoteKeys(op, group, body))
        return sum(len(g) for g in groups.values())

    async def publish_mids(self, op: int, mids: list[int], seqs: list[int], body: bytes) -> int:
        """The connections of these users on other hosts; returns how many."""
        servers = await self.cluster.directory.servers_of_mids(mids)
        count = 0
        for server, keys in servers.items():
            if server == self.name:
                continue
            await self.crosshost.publish(
                self.crosshost.host_channel(server), RemoteMids(op, mids, body, seqs)
            )
            count += len(keys)
        return count

    async def publish_room(self, op: int, room: str, body: bytes) -> int:
        return await self.crosshost.publish(self.crosshost.room_channel(room), RemoteRoom(op, room, body))

    async def publish_all(self, op: int, speed: int, body: bytes) -> int:
        hosts = max(1, len(await self.cluster.directory.servers()))
        share = -(-speed // hosts) if speed > 0 else 0
        return await self.crosshost.publish(self.crosshost.all_channel, RemoteAll(op, share, body))


__all__ = ["RedisFabric"]
