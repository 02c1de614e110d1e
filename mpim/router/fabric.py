"""What lies beyond this host, behind one protocol: nothing (one host), or the other hosts on Redis.

The router's pieces (:mod:`~mpim.router.pushes`, :mod:`~mpim.router.requests`,
:mod:`~mpim.router.peers`) never ask whether they run in a cluster: they hand every
step that may concern other hosts to the :class:`Fabric`. :class:`LocalFabric` is the
embedded default (every answer is this host's own); :class:`mpim.router.redisfabric.RedisFabric`
is the Redis one, on :class:`mpim.router.cluster.HostCluster` (goim v2's session layout, leases)
and :class:`mpim.router.crosshost.CrossHost` (cross-host pushes over Redis pub/sub). With
several router shards (``[router] shards``) the other shards are beyond this process too:
:class:`mpim.router.shardfabric.ShardFabric` on one host, and
:class:`mpim.router.shardredis.ShardRedisFabric` (the shards and the other hosts) on Redis.

A method that may need Redis returns either a value (known now) or an awaitable
(known once Redis answered); callers treat both the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from mpim.cluster.directory import Host, Totals

if TYPE_CHECKING:
    from mpim.records import SessionRow
    from mpim.router.store import SessionStore
    from mpim.router.streams import Stored, UserStreams

Here = Callable[[], asyncio.Future[None]]  # this host's part of a room or broadcast push


class Fabric(Protocol):
    """The other hosts, as the router's pieces see them."""

    name: str  # this host's name in the cluster ("" alone)
    stats: dict[str, int]

    # -- this host's sessions, as the other hosts must see them --------------------------------------
    def file(self, key: str, mid: int) -> asyncio.Future[int | None] | None:
        """A new connection. None: nothing to wait for; else a future of the mid of another
        user holding ``key`` on another host (deny the connect), or None (filed)."""
        ...

    def unfile(self, key: str, mid: int) -> None: ...

    def room_opened(self, room: str) -> asyncio.Future[Any] | None:
        """A room got its first member here: None, or what to wait for before confirming."""
        ...

    def sessions_changed(self) -> None:
        """A bulk change of this host's sessions (a worker's full report, a worker gone)."""
        ...

    # -- pushes ---------------------------------------------------------------------------------
    def refusal(self) -> str:
        """Why pushes must be refused now ("" = they need not)."""
        ...

    def push_keys(self, local: int, op: int, keys: list[str], body: bytes) -> int | asyncio.Future[int]:
        """``local`` connections took it here; add those of the other hosts."""
        ...

    def push_mids(self, op: int, mids: list[int], body: bytes) -> asyncio.Future[Stored]:
        """Store a push by mid and deliver it everywhere: (connections, {mid: seq})."""
        ...

    def deliver_mids(
        self, local: int, op: int, mids: list[int], seqs: list[int], body: bytes
    ) -> int | Awaitable[int]:
        """A stored message that ``local`` connections took here; add the other hosts'."""
        ...

    def push_room(self, op: int, room: str, body: bytes, here: Here) -> asyncio.Future[None]: ...

    def push_all(
        self, op: int, speed: int, body: bytes, here: Callable[[int], asyncio.Future[None]]
    ) -> asyncio.Future[None]:
        """``here(speed)`` delivers this host's part at ``speed`` for the host."""
        ...

    # -- numbers ---------------------------------------------------------------------------------
    def room_online(self, room: str) -> int:
        """A room's members on every host (the others' as last read)."""
        ...

    def online_elsewhere(self, mids: list[int]) -> set[int] | Awaitable[set[int]]:
        """Which of these users (none of them online here) have a session on another host."""
        ...

    def top_rooms(
        self, prefix: str, limit: int
    ) -> list[tuple[str, int]] | Awaitable[list[tuple[str, int]]]: ...

    def online_rooms(self, rooms: list[str]) -> dict[str, int] | Awaitable[dict[str, int]]: ...

    def totals(self) -> Totals | Awaitable[Totals]: ...

    def hosts(self) -> Awaitable[list[Host]] | None:
        """Every live host with its numbers; None when this host is the only one there is."""
        ...

    def sessions(self, key: str, mid: int) -> Awaitable[list[SessionRow]] | None:
        """The connections with ``key`` (or of user ``mid``) when the router's tables hold only
        part of this host's (router shards); None when they hold all."""
        ...

    def worker_conns(self) -> Awaitable[dict[str, int]] | None:
        """Connections per worker of this host when the router's tables hold only part of them
        (router shards); None when they hold all."""
        ...


class LocalFabric:
    """One host: nothing beyond it. Every answer is this host's own, known at once."""

    name = ""

    def __init__(self, store: SessionStore, streams: UserStreams) -> None:
        self.store = store
        self.streams = streams
        self.stats: dict[str, int] = {}

    def file(self, key: str, mid: int) -> None:
        return None

    def unfile(self, key: str, mid: int) -> None:
        pass

    def room_opened(self, room: str) -> None:
        return None

    def sessions_changed(self) -> None:
        pass

    def refusal(self) -> str:
        return ""

    def push_keys(self, local: int, op: int, keys: list[str], body: bytes) -> int:
        return local

    def push_mids(self, op: int, mids: list[int], body: bytes) -> asyncio.Future[Stored]:
        return self.streams.push_mids_here(op, mids, body)

    def deliver_mids(self, local: int, op: int, mids: list[int], seqs: list[int], body: bytes) -> int:
        return local

    def push_room(self, op: int, room: str, body: bytes, here: Here) -> asyncio.Future[None]:
        return here()

    def push_all(
        self, op: int, speed: int, body: bytes, here: Callable[[int], asyncio.Future[None]]
    ) -> asyncio.Future[None]:
        return here(speed)

    def room_online(self, room: str) -> int:
        return self.store.online(room)

    def online_elsewhere(self, mids: list[int]) -> set[int]:
        return set()

    def top_rooms(self, prefix: str, limit: int) -> list[tuple[str, int]]:
        return self.store.top_rooms(prefix, limit)

    def online_rooms(self, rooms: list[str]) -> dict[str, int]:
        online = self.store.online
        return {room: online(room) for room in rooms}

    def totals(self) -> Totals:
        return Totals(self.store.ip_total, len(self.store))

    def hosts(self) -> None:
        return None

    def worker_conns(self) -> None:
        return None

    def sessions(self, key: str, mid: int) -> None:
        return None


__all__ = ["Fabric", "Here", "LocalFabric"]
