"""A worker's router shards: which link a connection's records take, and what each shard is told.

With ``[router] shards = N`` the worker holds one :class:`~mpim.worker.routerlink.RouterLink`
per shard. The pieces here keep the shard arithmetic out of the links:

- :class:`Shard` — one link's place: its index, the shard count, its name in the logs, and
  which session entries it owns (``Sync``).
- :class:`RouterLinks` — the links by shard; :meth:`RouterLinks.of` is the owner of a
  connection (:func:`mpim.slots.owner`), the one link its requests go to.
- A :class:`Tally` per link — the counts its ``Alive`` reports: with one shard the worker's
  own (:class:`WorkerTally`); with several, :class:`ShardTally` keeps, as the records go up,
  what this worker told that shard (key -> room), so a report needs no scan of the
  connections; every ``Sync`` to the shard resets it to the entries sent.
- :class:`RoomTotals` — each shard counts a room's members it owns: the worker sums the
  shards' latest ``RoomCounts`` per room (what its clients see as the room's online count).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from mpim.slots import owner

if TYPE_CHECKING:
    from mpim.records import Entry
    from mpim.worker.channel import Channel
    from mpim.worker.link import RoomCounter, SessionTarget
    from mpim.worker.routerlink import RouterLink


class Shard:
    __slots__ = ("count", "index", "label")

    def __init__(self, index: int, count: int) -> None:
        self.index = index
        self.count = count
        self.label = "the router" if count == 1 else f"router shard {index}"

    def owns(self, entries: list[Entry]) -> list[Entry]:
        """The entries whose connection this shard owns."""
        if self.count == 1:
            return entries
        index, count = self.index, self.count
        return [e for e in entries if owner(e.mid, e.key, count) == index]


class Tally(Protocol):
    """What one link's ``Alive`` counts, and the session events that change it."""

    @property
    def online(self) -> int: ...
    def local_counts(self) -> dict[str, int]: ...
    def filed(self, key: str, room: str) -> None: ...
    def gone(self, key: str) -> None: ...
    def synced(self, entries: list[Entry]) -> None: ...


class WorkerTally:
    """One shard: the worker's own counts (its authenticated connections, its rooms' members)."""

    def __init__(self, sessions: SessionTarget, rooms: RoomCounter) -> None:
        self.sessions = sessions
        self.rooms = rooms

    @property
    def online(self) -> int:
        return self.sessions.online

    def local_counts(self) -> dict[str, int]:
        return self.rooms.local_counts()

    def filed(self, key: str, room: str) -> None:
        pass

    def gone(self, key: str) -> None:
        pass

    def synced(self, entries: list[Entry]) -> None:
        pass


class ShardTally:
    """Several shards: the sessions this worker filed with one of them (key -> room), as its
    table should hold them, counted per room."""

    def __init__(self, rooms: RoomCounter | None = None) -> None:
        self.rooms = rooms  # the worker's rooms (all shards')
        self._rooms: dict[str, str] = {}  # key -> room ("" none)
        self._counts: dict[str, int] = {}  # room -> members filed

    @property
    def online(self) -> int:
        return len(self._rooms)

    def local_counts(self) -> dict[str, int]:
        """This shard's members per room, and 0 for every other room with members here: the
        shard sends this worker its count of each (the worker sums the shards')."""
        everywhere = dict.fromkeys(self.rooms.local_counts(), 0) if self.rooms is not None else {}
        return everywhere | self._counts

    def filed(self, key: str, room: str) -> None:
        """A ``Connect`` or ``RoomChange`` went up: ``key`` is in ``room`` now."""
        self.gone(key)
        self._rooms[key] = room
        if room:
            self._counts[room] = self._counts.get(room, 0) + 1

    def gone(self, key: str) -> None:
        room = self._rooms.pop(key, None)
        if room:
            left = self._counts[room] - 1
            if left:
                self._counts[room] = left
            else:
                del self._counts[room]

    def synced(self, entries: list[Entry]) -> None:
        """A ``Sync`` went up: the shard's table is these entries."""
        self._rooms, self._counts = {}, {}
        for entry in entries:
            self.filed(entry.key, entry.room)


class RoomTotals:
    """The shards' room counts summed per room (with one shard: its counts as they come)."""

    def __init__(self, shards: int) -> None:
        self._counts: list[dict[str, int]] = [{} for _ in range(shards)] if shards > 1 else []

    def add(self, shard: int, counts: dict[str, int]) -> dict[str, int]:
        """Shard ``shard``'s latest counts: the totals of the rooms they name."""
        if not self._counts:
            return counts
        self._counts[shard].update(counts)
        return {room: sum(c.get(room, 0) for c in self._counts) for room in counts}

    def forget(self, room: str) -> None:
        """The room has no local members any more: its counts go with it."""
        for counts in self._counts:
            counts.pop(room, None)


class RouterLinks:
    """The links to the router shards, by shard index."""

    def __init__(self, links: list[RouterLink]) -> None:
        self.links = links
        self.count = len(links)

    def __iter__(self) -> Iterator[RouterLink]:
        return iter(self.links)

    def __getitem__(self, shard: int) -> RouterLink:
        return self.links[shard]

    def of(self, channel: Channel) -> RouterLink:
        """The link to the shard that owns ``channel``."""
        return self.links[owner(channel.mid, channel.key, self.count)]

    def buffered(self) -> int:
        """Bytes waiting on every link."""
        return sum(link.buffered() for link in self.links)
