"""This host's part in a cluster of hosts that share one Redis (``[cluster] redis``).

How this works:

- **Who is where.** Every session the router files is mirrored into the directory
  (:mod:`mpim.cluster.directory`, goim v2's layout) as it comes and goes; every third of
  the session ttl the host renews all its entries. A worker's full session report, a
  worker's death or Redis coming back makes the host rebuild its entries whole.
- **Membership** (:mod:`mpim.router.membership`): a short lease, renewed every
  ``[cluster] lease_interval`` with the host's ports and counts; a host whose lease
  lapsed is dead to the others at once (its entries are skipped, its counts drop out),
  and its name is free for its next incarnation.
- **Pushes across hosts** go over Redis pub/sub: :class:`~mpim.router.crosshost.CrossHost`
  (this host's channels, publishing, and the reader of what other hosts publish). A push
  by key or mid looks up the other hosts holding those connections in the directory and
  publishes to each once; a room push is published on the room's channel (only hosts with
  members listen); a broadcast on the broadcast channel (each host paces its share of
  ``speed``). The ZeroMQ bus stays inside each host.
- **Counts.** Every ``online_interval`` the host replaces its room counts (``ol_<name>``)
  and reads the other live hosts'; heartbeat replies and the online API add this host's
  own, current counts to them, so a cluster figure is never older than two intervals.
- **Router shards** (``[router] shards`` > 1): every shard files its own users' sessions
  (its own index, ``conns_<name>.<shard>``), renews them and the host's lease, and reads the
  host's channel (each one hands what its own connections hold). Shard 0 speaks for the host:
  the lease's fields and counts, the room counts, the room and broadcast channels (the other
  shards ask it to listen on a room that got a member, one hop).
- **Redis lost.** Local pushes keep working; the cross-host part of a push fails
  with a clear error (the answer says which part was delivered), logged once; when
  Redis answers again the host files everything again and subscribes again. This class
  keeps whether Redis answers (:class:`~mpim.router.crosshost.Health`) and guards every
  background call with it, the cross-host side's included.

The router's pieces never call this class for a push: they speak the
:class:`~mpim.router.fabric.Fabric` protocol, whose Redis side is
:class:`~mpim.router.redisfabric.RedisFabric` (built on this class and its
:class:`~mpim.router.crosshost.CrossHost`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from mpim.cluster import ClusterError
from mpim.cluster.directory import Directory, Entry, HostInfo, Totals
from mpim.config import Config, parse_address
from mpim.records import RemoteKick
from mpim.router.crosshost import CrossHost
from mpim.router.membership import Membership

if TYPE_CHECKING:
    from mpim.router.core import Router

log = logging.getLogger("mpim.cluster")

HostNumbers = Callable[[], Awaitable[tuple[Totals, dict[str, int]]]]
"""The host's totals and room counts, summed over its router shards."""


class HostCluster:
    def __init__(
        self,
        cfg: Config,
        router: Router,
        client: Redis,
        name: str,
        incarnation: str = "",
        shard: int = 0,
        shards: int = 1,
    ) -> None:
        self.cfg = cfg
        self.shards = shards
        self.voice = shard == 0  # speaks for the host: lease fields, counts, rooms, broadcasts
        self.router = router
        self.client = client
        self.name = name
        self.prefix = cfg.cluster.key_prefix
        self.directory = Directory(
            client,
            ttl=router.session_ttl,
            lease=cfg.cluster.lease_ttl,
            prefix=self.prefix,
            timeout=cfg.cluster.timeout,
        )
        if incarnation:  # (the master's run: a restarted router renews the same lease, and the
            self.directory.owner = incarnation  # router shards of one host share it)
        if shards > 1:
            self.directory.part = f".{shard}"
        info = self.info if self.voice else None
        self.membership = Membership(cfg.cluster, self.directory, name, info, router.loop)
        self.host_numbers: HostNumbers | None = None  # (several shards: asked of them all)
        self.host_totals = Totals(0, 0)  # the host's, as last summed over the shards
        self.online: dict[str, int] = {}  # the other hosts' room counts, last read
        self.up = True
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rebuild_due = False
        self._rebuilding = asyncio.Lock()
        self.stopped = False  # (a clean stop: nothing is filed or renewed after it)
        self.stats = dict.fromkeys(("published", "received", "errors", "rebuilds", "lapses"), 0)
        self.crosshost = CrossHost(
            self.prefix, name, router, client, self.directory, self, self.stats, rooms=self.voice
        )

    def reconfigure(self, cfg: Config) -> None:
        self.cfg = cfg
        self.membership.reconfigure(cfg.cluster)

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Claim this host's name (ClusterError if a live host keeps it) and start listening."""
        claim = await self.membership.join()
        # (what a dead incarnation left; a shard restarted alone leaves the host's counts be)
        stale = await self.directory.drop(self.name, counts=self.voice)
        if claim.other and claim.other != self.directory.owner:
            log.info(
                "host %s: took the name over from incarnation %s, which died (its lease lapsed);"
                " dropped %d of its entries",
                self.name,
                claim.other,
                stale,
            )
        await self.crosshost.start()
        self.membership.ready = True
        log.info(
            "host %s joined the cluster on %s as incarnation %s",
            self.name,
            self.cfg.cluster.redis.split("@")[-1],
            self.directory.owner,
        )

    async def stop(self) -> None:
        """A clean stop: this host's entries and name go at once (not after the ttl)."""
        self.stopped = True
        self.crosshost.stop_reading()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(ClusterError, RedisError, OSError):
            await self.directory.drop(self.name, counts=self.voice)
            if self.voice:
                await self.directory.release_name(self.name)
        await self.crosshost.close()

    def info(self) -> HostInfo:
        cfg = self.cfg
        nc = cfg.nodes
        tcp = parse_address(cfg.tcp.bind[0])[1] if cfg.tcp.bind else 0
        ws = parse_address(cfg.websocket.bind[0])[1] if cfg.websocket.bind else 0
        store = self.router.store
        host = Totals(store.ip_total, len(store)) if self.host_numbers is None else self.host_totals
        return HostInfo(
            domain=nc.domain or self.name,
            addresses=tuple(nc.addresses),
            tcp_port=tcp,
            ws_port=ws,
            wss_port=nc.wss_port,
            conns=host.conn_count,
            ips=host.ip_count,
            shards=self.shards,
        )

    # -- whether Redis answers (the cross-host side's calls are guarded here too) -----------------
    def spawn(self, coro: Any) -> None:
        if self.stopped:  # (a renewal or rebuild due after the stop would file entries again)
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(self.guarded(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def guarded(self, coro: Any) -> Any:
        try:
            result = await coro
        except (ClusterError, RedisError, OSError) as exc:
            self.lost(exc)
            return None
        self.back()
        return result

    def lost(self, exc: BaseException) -> None:
        self.stats["errors"] += 1
        if self.membership.settled:
            self.membership.unsettle()  # (whatever comes back, the view is partial until settled)
        if self.up:
            self.up = False
            log.error("Redis lost (%s): this host serves its own clients; cross-host pushes fail", exc)

    def back(self) -> None:
        if not self.up:
            self.up = True
            log.info("Redis is back: filing this host's sessions again")
            self.spawn(self.membership.settle(self._rebuild))

    # -- mirroring this host's sessions ----------------------------------------------------------------
    def file(self, key: str, mid: int) -> asyncio.Future[int | None]:
        """File a new connection in Redis. The task's result: the mid of another user who holds
        ``key`` on another host (deny the connect: nothing was filed), else None (also while Redis
        is out of reach: the host then serves alone)."""
        task = asyncio.get_running_loop().create_task(self.guarded(self._connected(key, mid)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _connected(self, key: str, mid: int) -> int | None:
        filing = await self.directory.connect(key, mid, self.name)
        if filing.held_by is not None:
            return filing.held_by
        previous = filing.previous
        if previous and previous != self.name:  # the key was on another host: it kicks its own
            await self.crosshost.publish(self.crosshost.host_channel(previous), RemoteKick([key]))
        return None

    def unfile(self, key: str, mid: int) -> None:
        self.spawn(self.directory.disconnect(key, mid, self.name))

    def rebuild_soon(self) -> None:
        """A bulk change (a worker's full report, a worker gone, a lapsed lease): file everything anew."""
        if not self._rebuild_due:
            self._rebuild_due = True
            asyncio.get_running_loop().call_later(0.2, lambda: self.spawn(self._rebuild()))

    async def _rebuild(self) -> None:
        self._rebuild_due = False
        self.stats["rebuilds"] += 1
        async with self._rebuilding:  # (one at a time: each sets the index aside, then sweeps it)
            moved = await self.directory.rebuild(self.name, self._entries)
        await self._kick_here(moved)
        await self.crosshost.resubscribe()

    def _entries(self) -> list[Entry]:
        store = self.router.store
        return [Entry(conn.key, conn.mid) for info in store.workers.values() for conn in info.conns.values()]

    async def _kick_here(self, keys: Iterable[str]) -> None:
        """Keys another host holds now: our older connections with them go."""
        for key in keys:
            self.router.workers.kick_key(key)

    def heartbeat(self) -> None:
        """Every ttl/3: renew every entry of this host."""
        self.spawn(self._heartbeat())

    async def _heartbeat(self) -> None:
        _, moved = await self.directory.renew(self.name, self._entries)
        await self._kick_here(moved)

    def renew_lease(self) -> None:
        """Every lease_interval: this host is alive (with its current counts)."""
        self.spawn(self.membership.renew(self._lapsed))

    def _lapsed(self) -> None:
        self.stats["lapses"] += 1
        self.rebuild_soon()

    def refusal(self) -> str:
        """Why pushes must be refused now ("" = they need not): see :mod:`mpim.router.membership`.
        While Redis is out of reach, pushes still serve this host (their answer says so)."""
        return self.membership.refusal() if self.up else ""

    def answered(self) -> str:
        """A push's cross-host part came back: why it must not be answered ok ("" = it may)."""
        self.back()
        return self.membership.refusal()

    def refresh_online(self) -> None:
        """Every online_interval: write this host's room counts, read the other hosts'."""
        self.spawn(self._refresh_online())

    async def put_online(self) -> dict[str, int]:
        """Write this host's room counts as of now (summed over its shards); returns them."""
        if self.host_numbers is None:
            counts = self.router.store.room_counts()
        else:
            self.host_totals, counts = await self.host_numbers()
        await self.directory.put_online(self.name, counts, 3 * self.cfg.router.online_interval + 1.0)
        return counts

    async def _refresh_online(self) -> None:
        if not self.voice:  # (shard 0 speaks for the host)
            self.membership.saw(await self.directory.servers())
            return
        opened = self.crosshost.take_opened()
        rooms = list(await self.put_online())
        self.online = await self.directory.online(rooms, exclude=self.name) if rooms else {}
        self.membership.saw(await self.directory.servers())
        # (a room opened while the counts were read is kept: they may predate its first member;
        # so is one a worker reports members in: its shard may be restarting)
        reported = {room for peer in self.router.workers.by_id.values() for room in peer.rooms}
        self.crosshost.listen_rooms(set(rooms) | reported | opened | self.crosshost.take_opened())
