"""Pushes between the hosts of a cluster, over Redis pub/sub (``[cluster] redis``).

How this works:

- **Channels.** Each host listens on its own channel (pushes by key and by mid, kicks),
  on the channel of every room it has members in, and on the broadcast channel. With
  several router shards each one reads the host's channel (it hands what its own
  connections hold) and shard 0 alone the room and broadcast channels (it relays them to
  the host's bus once). A room
  gets its channel as soon as it has its first member here (:meth:`CrossHost.room_opened`);
  every ``online_interval`` the room channels follow this host's rooms
  (:meth:`CrossHost.listen_rooms`).
- **Publishing.** Every publish goes out on one connection (the directory's turn pipeline),
  in call order, so a room's pushes (and a user's) keep their order on every host.
- **Receiving.** One reader task takes what the other hosts (and this one, for rooms and
  broadcasts) published and dispatches it by record type (:meth:`CrossHost._deliver`) to
  the router's pieces: pushes by key or mid to the workers' links, room and broadcast
  pushes to this host's bus, kicks to the workers holding the keys.

Whether Redis answers is the cluster's to know (:class:`Health`, which
:class:`~mpim.router.cluster.HostCluster` implements): a failed call is reported to it,
and every background call is guarded by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from mpim import bus, records
from mpim.cluster import ClusterError
from mpim.records import PushAll, PushRoom, RemoteAll, RemoteKeys, RemoteKick, RemoteMids, RemoteRoom

if TYPE_CHECKING:
    from mpim.cluster.directory import Directory
    from mpim.router.core import Router

log = logging.getLogger("mpim.cluster")

_decode = records.Decoder(records.RemoteRecord)


class Health(Protocol):
    """Whether Redis answers, as the cluster sees it."""

    up: bool

    def lost(self, exc: BaseException) -> None: ...

    def back(self) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...

    def guarded(self, coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]: ...


class CrossHost:
    def __init__(
        self,
        prefix: str,
        name: str,
        router: Router,
        client: Redis,
        directory: Directory,
        health: Health,
        stats: dict[str, int],
        rooms: bool = True,
    ) -> None:
        self.prefix = prefix
        self.name = name
        self.router = router
        self.client = client
        self.directory = directory
        self.health = health
        self.stats = stats  # (the cluster's: published, received)
        self.pubsub: Any = client.pubsub(ignore_subscribe_messages=False)
        self.relays = rooms  # this process listens on room and broadcast channels for the host
        self.rooms: set[str] = set()  # room channels we listen on
        self._opened: set[str] = set()  # rooms opened since the last take_opened
        self._subscribing: dict[str, asyncio.Task[Any]] = {}
        self._reader: asyncio.Task[None] | None = None

    # -- channels -------------------------------------------------------------------------------
    def host_channel(self, name: str) -> str:
        return f"{self.prefix}mpim:h:{name}"

    def room_channel(self, room: str) -> str:
        return f"{self.prefix}mpim:r:{room}"

    @property
    def all_channel(self) -> str:
        return f"{self.prefix}mpim:all"

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on this host's channel and the broadcast channel."""
        await self.pubsub.subscribe(*self._channels())
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def resubscribe(self) -> None:
        """Redis came back (or the host files itself anew): listen on every channel again."""
        await self.pubsub.subscribe(*self._channels(), *map(self.room_channel, self.rooms))
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())

    def _channels(self) -> list[str]:
        mine = self.host_channel(self.name)
        return [mine, self.all_channel] if self.relays else [mine]

    def stop_reading(self) -> None:
        if self._reader is not None:
            self._reader.cancel()

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.pubsub.aclose()

    # -- room channels ------------------------------------------------------------------------------
    def listen_rooms(self, rooms: set[str]) -> None:
        """Listen on the channels of these rooms (this host's), and on no other room's."""
        new, gone = rooms - self.rooms, self.rooms - rooms
        self.rooms = rooms
        if new:
            self.health.spawn(self.pubsub.subscribe(*map(self.room_channel, new)))
        if gone:
            self.health.spawn(self.pubsub.unsubscribe(*map(self.room_channel, gone)))

    def room_opened(self, room: str) -> asyncio.Future[Any] | None:
        """A room got its first member on this host: listen on its channel now. Returns the
        subscription in flight (its done = the request is on its way to Redis), or None."""
        if not room:
            return None
        self._opened.add(room)
        if room in self.rooms:
            return self._subscribing.get(room)
        self.rooms.add(room)
        log.debug("listening on room %s across hosts", room)
        task = asyncio.get_running_loop().create_task(
            self.health.guarded(self.pubsub.subscribe(self.room_channel(room)))
        )
        self._subscribing[room] = task
        task.add_done_callback(lambda _: self._subscribing.pop(room, None))
        return task

    def take_opened(self) -> set[str]:
        """The rooms opened since the last call."""
        opened, self._opened = self._opened, set()
        return opened

    # -- pushes to the other hosts ------------------------------------------------------------------
    async def publish(self, channel: str, record: Any) -> int:
        """PUBLISH through the directory's turn pipeline: one connection, so Redis gets this
        host's publishes in call order (a room's pushes stay in order on every host) and a
        backlog of pushes never takes one pooled connection each."""
        self.stats["published"] += 1
        receivers: int = await self.directory.pipeline.call(
            "publish", ("PUBLISH", channel, records.encode(record))
        )
        return receivers

    # -- pushes from the other hosts --------------------------------------------------------------------
    async def _read(self) -> None:
        health = self.health
        while True:
            try:
                message = await self.pubsub.get_message(timeout=1.0)
            except (RedisError, OSError) as exc:
                health.lost(exc)
                await asyncio.sleep(0.5)
                if health.up is False:
                    with contextlib.suppress(RedisError, OSError, ClusterError):
                        await self.client.ping()
                        health.back()
                continue
            if message is None or message.get("type") not in ("message", "pmessage"):
                if message is not None:
                    log.debug("cluster channel: %s %s", message.get("type"), message.get("channel"))
                continue
            self.stats["received"] += 1
            try:
                self._deliver(_decode(message["data"]))
            except records.BadRecord as exc:
                log.warning("ignoring a malformed message from the cluster: %s", exc)

    def _deliver(self, record: Any) -> None:
        router = self.router
        match record:
            case RemoteMids():
                router.push.send_mids(record.op, record.mids, record.seqs, record.body)
            case RemoteKeys():
                router.push.send_keys(record.op, record.keys, record.body)
            case RemoteRoom():
                # (stamped when this host publishes it: the latency metric, on this host's clock)
                pushed = PushRoom(record.op, record.body, time.monotonic())
                router.relay.publish(bus.room_topic(record.room), records.encode(pushed))
            case RemoteAll():
                workers = max(1, len(router.workers.by_id))
                share = -(-record.speed // workers) if record.speed > 0 else 0
                pushed_all = PushAll(record.op, share, record.body, time.monotonic())
                router.relay.publish(bus.BROADCAST, records.encode(pushed_all))
            case RemoteKick():
                for key in record.keys:
                    router.workers.kick_key(key)
