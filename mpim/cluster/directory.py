"""Who is where across hosts, in goim v2's Redis layout, and which hosts are alive.

How this works. Each host files its connections: ``key_<key>`` -> server (a string with
an expiry) and, for a user, the field ``key`` -> server in the hash ``mid_<mid>``, as
goim's logic does; mpim adds ``conns_<server>`` (key -> mid), the index that lets a host
rebuild or drop exactly its own entries. Every key carries an expiry of ``ttl`` (goim:
the heartbeat timeout), renewed by :meth:`Directory.renew` while the connections live,
so a host that dies leaves nothing behind once it has passed. Filing a key is an atomic
check-and-set (:data:`~mpim.cluster.directory_lua.CONNECT`) that returns the server that
held the key before: when it is another host, the caller tells that host to kick its
connection. Lookups by mid drop fields whose ``key_`` says otherwise (stale after a host
died or a key moved).

Hosts: ``srv_<name>`` is a host's **lease** (its incarnation id, address, ports, weight
and counts, for ``/goim/nodes/weighted``), claimed and renewed every ``lease_interval`` by
one incarnation only and expiring after ``lease_ttl``, so a second live host with the same
``[server] name`` is refused while a dead one's name is free again within seconds. A host
without a lease is dead: lookups skip its entries (its users are offline, its keys free)
and its counts drop out. ``ol_<server>`` holds a host's room counts (replaced whole by
:meth:`Directory.put_online`), summed over live hosts for the cluster-wide numbers. The
scripts and the key layout are in ``directory_lua.py``.

Every call is bounded (``[cluster] timeout``) and fails with :class:`ClusterError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

from redis.asyncio import Redis

from mpim.cluster import ClusterError
from mpim.cluster import directory_lua as lua
from mpim.cluster.batch import Script, TurnPipeline
from mpim.cluster.guard import RedisGuard

log = logging.getLogger(__name__)

CHUNK = 500  # connections per script call (renew, rebuild) and rooms per count query


class Entry(NamedTuple):
    """One connection a host holds: its key and user (0 = none)."""

    key: str
    mid: int


@dataclass(frozen=True)
class HostInfo:
    """What a host tells the cluster about itself in ``srv_<name>``."""

    domain: str = ""
    addresses: tuple[str, ...] = ()
    tcp_port: int = 0
    ws_port: int = 0
    wss_port: int = 0
    weight: int = 1
    conns: int = 0
    ips: int = 0
    ready: int = 1  # 0 while the host files its sessions again (after Redis came back)
    shards: int = 1  # router shards: each keeps its own index, ``conns_<name>.<shard>``

    def fields(self) -> list[str]:
        out: list[str] = []
        for name, value in asdict(self).items():
            out += (name, json.dumps(list(value)) if isinstance(value, tuple) else str(value))
        return out

    @classmethod
    def parse(cls, raw: Mapping[str, str]) -> HostInfo:
        values: dict[str, Any] = {}
        for f in fields(cls):
            text = raw.get(f.name)
            if text is None:
                continue
            try:
                if f.name == "addresses":
                    values[f.name] = tuple(str(a) for a in json.loads(text))
                elif f.name == "domain":
                    values[f.name] = text
                else:
                    values[f.name] = int(text)
            except (ValueError, TypeError):
                continue  # written by another version: keep the default
        return cls(**values)


class Host(NamedTuple):
    """A live host: its name, what it said, and when it last said so (Redis time)."""

    name: str
    info: HostInfo
    updated: float


Held = Iterable[Entry] | Callable[[], Iterable[Entry]]
"""What a host holds: its entries, or (what the host passes) a function that reads them when
the renewal is queued."""


class Totals(NamedTuple):
    ip_count: int
    conn_count: int


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


class Claim(NamedTuple):
    """The answer to a lease claim."""

    taken: bool  # this incarnation holds the name now
    other: str  # taken: the incarnation that held the name last ('' = none); else the live owner
    fresh: bool  # taken, and the lease was not there: a first claim, or it had lapsed


class Filing(NamedTuple):
    previous: str | None  # the server that held the key before
    held_by: int | None  # not None: another server holds the key for this mid; nothing filed


def _mid(mid: int) -> str:
    return str(mid) if mid > 0 else ""


class Directory:
    """The cluster's session directory and host registry (see the module docstring)."""

    def __init__(
        self, client: Redis, *, ttl: float, lease: float = 4.0, prefix: str = "", timeout: float = 1.0
    ) -> None:
        if not ttl > 0 or not lease > 0:
            raise ValueError(f"ttl and lease must be positive, got {ttl} and {lease}")
        self.client = client
        self.prefix = prefix
        self.ttl_ms = max(1, round(ttl * 1000))
        self.lease_ms = max(1, round(lease * 1000))
        self.owner = secrets.token_hex(8)  # this incarnation's id: its claim on its host name
        self.part = ""  # this index's suffix: ".<shard>" for one router shard of several
        self._servers_key = f"{prefix}servers"
        self._hosts_key = f"{prefix}hosts"
        self._connect = Script(lua.CONNECT)
        self._disconnect = Script(lua.DISCONNECT)
        self._renew = Script(lua.RENEW)
        self._mids = Script(lua.SERVERS_OF_MIDS)
        self._keys = Script(lua.SERVERS_OF_KEYS)
        self._begin = Script(lua.REBUILD_BEGIN)
        self._sweep = Script(lua.REBUILD_SWEEP)
        self._claim = Script(lua.CLAIM)
        self._release = Script(lua.RELEASE)
        self._servers = Script(lua.SERVERS)
        self._put_online = Script(lua.PUT_ONLINE)
        self._online = Script(lua.ONLINE)
        self._top = Script(lua.TOP_ROOMS)
        scripts = [v for v in vars(self).values() if isinstance(v, Script)]
        self.pipeline = TurnPipeline(client, RedisGuard("directory", client, timeout, ClusterError), scripts)

    # -- key names (goim v2's, behind the prefix) -----------------------------------------
    def key_key(self, key: str) -> str:
        return f"{self.prefix}key_{key}"

    def mid_key(self, mid: int) -> str:
        return f"{self.prefix}mid_{mid}"

    def online_key(self, server: str) -> str:
        return f"{self.prefix}ol_{server}"

    def conns_key(self, server: str) -> str:
        """The index of what ``server`` (this router shard of it, when it has several) filed."""
        return f"{self.prefix}conns_{server}{self.part}"

    def aside_key(self, server: str) -> str:
        """Where a rebuild sets the server's old index aside."""
        return f"{self.prefix}rebuild_{server}{self.part}"

    def server_key(self, server: str) -> str:
        return f"{self.prefix}srv_{server}"

    def _entry_keys(self, server: str, key: str, mid: int) -> list[str]:
        keys = [self.key_key(key), self.conns_key(server)]
        if mid > 0:
            keys.append(self.mid_key(mid))
        return keys

    # -- connections ----------------------------------------------------------------------
    async def connect(self, key: str, mid: int, server: str) -> Filing:
        """File ``key`` (of user ``mid``, 0 = none) on ``server``. ``previous``: the server that held
        the key before, or None; another server than ``server`` must kick its connection. When
        another server holds the key for another user, nothing is filed and ``held_by`` is that
        user's mid (0 = a connection without a user)."""
        args: list[str | int] = [server, key, _mid(mid), self.ttl_ms, self.prefix]
        reply = await self.pipeline.script("connect", self._connect, self._entry_keys(server, key, mid), args)
        previous = _text(reply[0]) or None
        if int(reply[1]):
            return Filing(previous, int(_text(reply[2]) or 0))
        return Filing(previous, None)

    async def disconnect(self, key: str, mid: int, server: str) -> bool:
        """Forget ``server``'s connection ``key``; False if another server holds the key now."""
        held = await self.pipeline.script(
            "disconnect", self._disconnect, self._entry_keys(server, key, mid), [server, key]
        )
        return bool(held)

    async def renew(self, server: str, entries: Held) -> tuple[list[str], list[str]]:
        """Renew the expiry of live connections (filing again any whose key_ is gone).
        Returns (keys filed again, keys another server holds now: kick them here).

        ``entries`` is read when the renewal is queued, and every chunk of it is queued in
        that same step: a removal the host queues later runs after it in Redis, and one it
        queued before is not in it. (A list read earlier could file again a connection whose
        removal ran in between, and leave it filed until its expiry.)"""
        batch = list(entries() if callable(entries) else entries)
        calls = []
        for start in range(0, len(batch), CHUNK):
            keys = [self.conns_key(server)]
            args: list[str | int] = [server, self.ttl_ms, self.prefix]
            for key, mid in batch[start : start + CHUNK]:
                keys += (self.key_key(key), self.mid_key(max(mid, 0)))
                args += (key, _mid(mid))
            calls.append(self.pipeline.call("renew", self._renew.command(keys, args)))
        restored: list[str] = []
        lost: list[str] = []
        replies = await asyncio.gather(*calls, return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
            again, taken = reply
            restored += map(_text, again)
            lost += map(_text, taken)
        return restored, lost

    async def rebuild(self, server: str, entries: Held) -> list[str]:
        """Make ``server``'s entries exactly ``entries`` (after Redis came back, or at start):
        files them again, drops the server's others. Returns the keys another server holds.
        ``entries`` is read once the old index is set aside (see :meth:`renew`)."""
        index, old = self.conns_key(server), self.aside_key(server)
        await self.pipeline.script("rebuild", self._begin, [index, old], [])
        _, lost = await self.renew(server, entries)
        dropped = await self._sweep_old(server, old, index)
        log.info("directory: %s rebuilt, %d stale entries dropped, %d taken", server, dropped, len(lost))
        return lost

    async def drop(self, server: str, counts: bool = True) -> int:
        """Remove every entry of ``server`` (of this router shard of it) and, with ``counts``, its
        room counts (a clean stop); returns how many."""
        index, old = self.conns_key(server), self.aside_key(server)
        await self.pipeline.script("drop", self._begin, [index, old], [])
        if counts:
            await self.pipeline.script("drop", self._put_online, [self.online_key(server)], [1])
        return await self._sweep_old(server, old, index)

    async def _sweep_old(self, server: str, old: str, index: str) -> int:
        cursor: bytes = b"0"
        dropped = 0
        while True:
            cursor, count = await self.pipeline.script(
                "rebuild", self._sweep, [old, index], [server, cursor, self.prefix, CHUNK]
            )
            dropped += int(count)
            if cursor == b"0":
                return dropped

    async def servers_of_mids(self, mids: Iterable[int]) -> dict[str, list[str]]:
        """The connections of some users: server -> keys."""
        keys = [self.mid_key(mid) for mid in dict.fromkeys(mids) if mid > 0]
        out: dict[str, list[str]] = {}
        for start in range(0, len(keys), CHUNK):
            flat = await self.pipeline.script(
                "servers_of_mids", self._mids, keys[start : start + CHUNK], [self.prefix]
            )
            for j in range(0, len(flat), 2):
                out.setdefault(_text(flat[j]), []).append(_text(flat[j + 1]))
        return out

    async def server_of_keys(self, keys: Iterable[str]) -> dict[str, str]:
        """Where some keys are connected on live hosts: key -> server (the others are left out)."""
        wanted = list(dict.fromkeys(keys))
        out: dict[str, str] = {}
        for start in range(0, len(wanted), CHUNK):
            part = wanted[start : start + CHUNK]
            found = await self.pipeline.script(
                "server_of_keys", self._keys, [self.key_key(k) for k in part], [self.prefix]
            )
            out.update((key, _text(at)) for key, at in zip(part, found, strict=True) if at)
        return out

    # -- online counts --------------------------------------------------------------------
    async def put_online(self, server: str, room_counts: Mapping[str, int], ttl: float) -> None:
        """Replace ``server``'s room counts (``ol_<server>``), kept ``ttl`` seconds."""
        counts = [x for room, n in room_counts.items() if n > 0 for x in (room, n)]
        ttl_ms = max(1, round(ttl * 1000))
        await self.pipeline.script(
            "put_online", self._put_online, [self.online_key(server)], [ttl_ms, *counts]
        )

    async def online(self, rooms: Iterable[str], exclude: str = "") -> dict[str, int]:
        """Cluster-wide online count of each room (live hosts, but ``exclude``)."""
        wanted = list(dict.fromkeys(rooms))
        out: dict[str, int] = {}
        for start in range(0, len(wanted), CHUNK):
            part = wanted[start : start + CHUNK]
            counts = await self.pipeline.script(
                "online", self._online, [self._servers_key], [self.prefix, exclude, *part]
            )
            out.update(zip(part, counts, strict=True))
        return out

    async def top_rooms(self, prefix: str, limit: int) -> list[tuple[str, int]]:
        """The ``limit`` rooms with the most connections whose id starts with ``prefix``."""
        if limit <= 0:
            return []
        flat = await self.pipeline.script(
            "top_rooms", self._top, [self._servers_key], [self.prefix, prefix, limit]
        )
        return [(_text(flat[j]), int(flat[j + 1])) for j in range(0, len(flat), 2)]

    async def totals(self) -> Totals:
        """Connections and client IPs over the live hosts (goim sums the hosts' IP counts)."""
        hosts = await self.servers()
        return Totals(sum(h.info.ips for h in hosts), sum(h.info.conns for h in hosts))

    # -- hosts ----------------------------------------------------------------------------
    async def claim_name(self, server: str, info: HostInfo | None = None, *, keep: bool = False) -> Claim:
        """Take ``server``'s lease for this incarnation, or renew it (every ``lease_interval``,
        with fresh counts). Not taken while another incarnation's lease lives. ``keep``: renew
        it and leave its fields as they are (a router shard that does not speak for the host)."""
        keys = [self.server_key(server), self._servers_key, self._hosts_key]
        fields = [] if keep else (info or HostInfo()).fields()
        args: list[str | int] = [server, self.owner, self.lease_ms, *fields]
        taken, other, fresh = await self.pipeline.script("claim_name", self._claim, keys, args)
        return Claim(bool(taken), _text(other) if isinstance(other, bytes) else str(other), bool(fresh))

    async def release_name(self, server: str) -> bool:
        """Give ``server`` up (a clean stop); False if this owner did not hold it."""
        done = await self.pipeline.script(
            "release_name", self._release, [self.server_key(server), self._servers_key], [server, self.owner]
        )
        return bool(done)

    async def servers(self) -> list[Host]:
        """The live hosts (their ``srv_`` key has not expired), by name."""
        flat = await self.pipeline.script("servers", self._servers, [self._servers_key], [self.prefix])
        hosts = []
        for j in range(0, len(flat), 2):
            pairs = flat[j + 1]
            raw = {_text(pairs[i]): _text(pairs[i + 1]) for i in range(0, len(pairs), 2)}
            try:
                updated = float(raw.get("updated", "0"))
            except ValueError:
                updated = 0.0
            hosts.append(Host(_text(flat[j]), HostInfo.parse(raw), updated))
        return sorted(hosts, key=lambda h: h.name)
