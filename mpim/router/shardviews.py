"""What a router shard answers for the host: presence, room counts, totals, sessions, workers.

Each shard's tables hold its own users only, so a number for the host is summed over the
shards' answers (one :class:`~mpim.records.ShardNumbers` call to each, in parallel), a
user's sessions are asked of its owner and a key's of every shard. A shard that cannot be
reached counts as empty: the answer is what the reachable shards hold.
"""

from __future__ import annotations

import functools
import heapq
from typing import TYPE_CHECKING

from mpim.cluster.directory import Totals
from mpim.records import (
    SessionRow,
    ShardAnswer,
    ShardExposition,
    ShardNumbers,
    ShardPresence,
    ShardSessions,
)
from mpim.router.metrics import ShardMetrics
from mpim.router.shardlink import answers

if TYPE_CHECKING:
    from mpim.router.metrics import Exposition
    from mpim.router.shardlink import ShardSite


class ShardViews:
    def __init__(self, site: ShardSite) -> None:
        self.site = site
        self.exposition: Exposition | None = None  # /metrics of this process (set once served)

    async def online_elsewhere(self, mids: list[int]) -> set[int]:
        """Of these users, those with a session on their owner shard (another one than this)."""
        site = self.site
        groups: dict[int, list[int]] = {}
        for mid in mids:
            owner = site.owner(mid)
            if owner != site.shard:
                groups.setdefault(owner, []).append(mid)
        if not groups:
            return set()
        calls = [site.peers.call(k, functools.partial(_presence, g)) for k, g in groups.items()]
        online: set[int] = set()
        for answer in await answers(calls):
            if isinstance(answer, ShardAnswer):  # (an unreachable shard's users: not known online)
                online.update(answer.mids)
        return online

    async def _numbers(self, brief: bool = False) -> list[ShardAnswer]:
        peers = self.site.peers
        calls = [peers.call(k, functools.partial(ShardNumbers, brief=brief)) for k in peers.others()]
        got = [a for a in await answers(calls) if isinstance(a, ShardAnswer)]
        return [self.numbers(0, brief), *got]

    async def top_rooms(self, prefix: str, limit: int) -> list[tuple[str, int]]:
        rooms = _sum_rooms(await self._numbers())
        items = ((room, n) for room, n in rooms.items() if room.startswith(prefix))
        return heapq.nsmallest(limit, items, key=lambda item: (-item[1], item[0]))

    async def online_rooms(self, rooms: list[str]) -> dict[str, int]:
        counts = _sum_rooms(await self._numbers())
        return {room: counts.get(room, 0) for room in rooms}

    async def totals(self) -> Totals:
        numbers = await self._numbers()
        return Totals(sum(n.ips for n in numbers), sum(n.count for n in numbers))

    async def host_numbers(self) -> tuple[Totals, dict[str, int]]:
        """The host's totals and room counts (the reachable shards')."""
        numbers = await self._numbers()
        return Totals(sum(n.ips for n in numbers), sum(n.count for n in numbers)), _sum_rooms(numbers)

    async def host_pushes(self) -> int:
        """The pushes the reachable shards took in (the console's pushes/s for the host)."""
        return sum(n.pushes for n in await self._numbers(brief=True))

    async def worker_conns(self) -> dict[str, int]:
        """Connections per worker over every shard."""
        out: dict[str, int] = {}
        for n in await self._numbers():
            for worker, count in n.workers.items():
                out[worker] = out.get(worker, 0) + count
        return out

    async def sessions(self, key: str, mid: int) -> list[SessionRow]:
        """The connections with ``key`` (or of user ``mid``) on every shard."""
        site = self.site
        shards = site.peers.others() if key else [site.owner(mid)]
        calls = [
            site.peers.call(k, functools.partial(_sessions, key, mid)) for k in shards if k != site.shard
        ]
        rows = self.rows(key, mid)
        for answer in await answers(calls):
            if isinstance(answer, ShardAnswer):
                rows += answer.sessions
        return rows

    async def metrics(self) -> list[ShardMetrics]:
        """The other shards' metrics families (shard 0's with the host's)."""
        peers = self.site.peers
        shards = peers.others()
        got = await answers([peers.call(k, ShardExposition) for k in shards])
        return [
            ShardMetrics(k, a.text, a.host)
            for k, a in zip(shards, got, strict=True)
            if isinstance(a, ShardAnswer)
        ]

    # -- this shard's part (asked by the others) --------------------------------------------------
    def exposition_of(self, req: int) -> ShardAnswer:
        if self.exposition is None:
            return ShardAnswer(req)
        local, host = self.exposition.texts()
        return ShardAnswer(req, text=local, host=host if self.site.shard == 0 else "")

    def rows(self, key: str, mid: int) -> list[SessionRow]:
        store = self.site.store
        if key:
            conn = store.conn_of(key)
            conns = [conn] if conn is not None else []
        else:
            conns = store.conns_of(mid)
        return [SessionRow(c.key, c.mid, c.seq, c.worker.id, c.room, c.ip) for c in conns]

    def numbers(self, req: int, brief: bool = False) -> ShardAnswer:
        pushes = sum(self.site.router.push.counts.values())
        if brief:  # (no room counts: a host's can be large, and the console asks every second)
            return ShardAnswer(req, pushes=pushes)
        store = self.site.store
        workers = {info.id: len(info.conns) for info in store.workers.values()}
        return ShardAnswer(
            req,
            count=len(store),
            rooms=store.room_counts(),
            ips=store.ip_total,
            workers=workers,
            pushes=pushes,
        )

    def presence(self, req: int, mids: list[int]) -> ShardAnswer:
        conns_of = self.site.store.conns_of
        return ShardAnswer(req, mids=[mid for mid in mids if conns_of(mid)])


def _sessions(key: str, mid: int, req: int) -> ShardSessions:
    return ShardSessions(req, key, mid)


def _presence(mids: list[int], req: int) -> ShardPresence:
    return ShardPresence(req, mids)


def _sum_rooms(numbers: list[ShardAnswer]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in numbers:
        for room, count in n.rooms.items():
            out[room] = out.get(room, 0) + count
    return out


__all__ = ["ShardViews"]
