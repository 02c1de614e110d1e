"""The :class:`~mpim.router.fabric.Fabric` of one router shard among several on one host.

How this works. Users are split over the shards by slot (:mod:`mpim.slots`); the workers
report each session to the shard that owns its user (a connection without a user: its
key), so this shard's tables hold its own users only. Whatever a push or a request needs
from the other shards takes one hop over :class:`~mpim.router.shardlink.ShardPeers`:

- **by user**: the shard that received the push stores it for every user (the inbox is one
  file, written by any shard in one transaction), hands it to its own users' connections and
  asks each other owner to hand the stored message (with its seqs) to theirs. A push with a
  user whose owner is unreachable is refused before anything is stored (-503).
- **by key**: a key's connection may be on any shard (it belongs to its user's), so every
  other shard is asked at once, in parallel: at most one extra hop.
- **rooms and everyone**: published on the bus by the shard that received them (its marks
  say ``shard``), answered once every live worker reported that mark — which workers have
  members is known to each shard only for its own users, so all of them are waited for.
- **private chat** is stored (both copies and the de-duplication id, atomically) by the
  sender's shard; the recipient's copy is handed out by the recipient's owner.
- **keys**: a key is one user's on the host; its claims are kept by the shard of the key's
  slot (:mod:`mpim.router.keyclaims`): a connect files its key there (one hop, or none) and is
  denied if another user holds it. A shard's claims go when its link drops and are filed
  again whole when the link comes back or its sessions changed in bulk.
- **numbers** (room counts, totals, presence) are summed over the shards when asked; the
  room counts each worker gets are this shard's own (each worker sums them over the shards).

An answer that another shard refused or did not give says so: -503 when it was not
reached (nothing done there), -504 when it may have been done, with what this shard did.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mpim import slots
from mpim.cluster.directory import Totals
from mpim.records import (
    SessionRow,
    ShardAnswer,
    ShardCall,
    ShardClaim,
    ShardClaims,
    ShardKeys,
    ShardMids,
    ShardNumbers,
    ShardPresence,
    ShardRelease,
    ShardSessions,
)
from mpim.router.errors import Refused
from mpim.router.fabric import Here
from mpim.router.keyclaims import KeyClaims
from mpim.router.shardlink import ShardPeers, answers

log = logging.getLogger("mpim.router")

REFILE_DELAY = 0.2  # a bulk change files the keys again this much later (one refile for a burst)

if TYPE_CHECKING:
    from mpim.router.core import Router
    from mpim.router.streams import Stored


class ShardFabric:
    name = ""  # one host

    def __init__(self, router: Router, shard: int, shards: int) -> None:
        self.router = router
        self.store = router.store
        self.loop = router.loop
        self.shard = shard
        self.shards = shards
        self.peers: ShardPeers | None = None  # set by the router process once it listens
        self.stats: dict[str, int] = {}
        self.claims = KeyClaims()  # the keys whose slot this shard keeps
        self._refile_due = False
        router.push.every_worker = True  # (a room's members on the other shards are not known here)

    def owner(self, mid: int) -> int:
        return slots.owner_of_mid(mid, self.shards)

    def _peers(self) -> ShardPeers:
        assert self.peers is not None, "the shard link is not set up"
        return self.peers

    # -- this shard's sessions: each key filed with the shard that keeps it ---------------------------
    def keeper(self, key: str) -> int:
        return slots.owner(0, key, self.shards)

    def file(self, key: str, mid: int) -> asyncio.Future[int | None] | None:
        """Claim ``key`` with its keeper; a future of the other user holding it (deny), or None.
        A keeper out of reach cannot say: the connect is let through (as on a host without Redis)."""
        keeper = self.keeper(key)
        if keeper == self.shard:
            held = self.claims.claim(self.shard, key, mid)
            if held is None:
                return None
            denied: asyncio.Future[int | None] = self.loop.create_future()
            denied.set_result(held)
            return denied
        call = self._peers().call(keeper, functools.partial(_claim, self.shard, key, mid))
        out: asyncio.Future[int | None] = self.loop.create_future()

        def then(done: asyncio.Future[ShardAnswer]) -> None:
            failed = done.cancelled() or done.exception() is not None
            if not out.done():
                out.set_result(None if failed or not done.result().mids else done.result().mids[0])

        call.add_done_callback(then)
        return out

    def unfile(self, key: str, mid: int) -> None:
        keeper = self.keeper(key)
        if keeper == self.shard:
            self.claims.release(self.shard, key, mid)
            return
        release = self._peers().call(keeper, functools.partial(_release, self.shard, key, mid))
        release.add_done_callback(_ignore)  # (a keeper that restarts drops the claim anyway)

    def room_opened(self, room: str) -> None:
        return None

    def sessions_changed(self) -> None:
        """A bulk change (a worker's full report, a worker gone): file every key again, soon."""
        if not self._refile_due:
            self._refile_due = True
            self.loop.call_later(REFILE_DELAY, self._refile_all)

    def _refile_all(self) -> None:
        self._refile_due = False
        for shard in range(self.shards):
            self.refile(shard)

    def refile(self, keeper: int) -> None:
        """Replace every claim this shard filed with ``keeper`` by what it holds now."""
        mine = [
            (conn.key, conn.mid)
            for info in self.store.workers.values()
            for conn in info.conns.values()
            if self.keeper(conn.key) == keeper
        ]
        if keeper == self.shard:
            self.claims.replace(self.shard, mine)
            return
        keys, mids = [k for k, _ in mine], [m for _, m in mine]
        peers = self._peers()
        if peers.up(keeper):
            peers.call(keeper, functools.partial(_claims, self.shard, keys, mids)).add_done_callback(_ignore)

    def shard_gone(self, shard: int) -> None:
        """Another shard's link to this one closed: its claims go (it files them again)."""
        dropped = self.claims.drop(shard)
        if dropped:
            log.info("router shard %d: dropped %d key claims of shard %d", self.shard, dropped, shard)

    def refusal(self) -> str:
        return ""

    # -- pushes --------------------------------------------------------------------------------
    def push_keys(self, local: int, op: int, keys: list[str], body: bytes) -> asyncio.Future[int]:
        peers = self._peers()
        calls = [peers.call(k, lambda req: ShardKeys(req, op, keys, body)) for k in peers.others()]
        return self.loop.create_task(self._summed(local, calls))

    def push_mids(self, op: int, mids: list[int], body: bytes) -> asyncio.Future[Stored]:
        peers = self._peers()
        down = sorted({k for k in map(self.owner, mids) if k != self.shard and not peers.up(k)})
        if down:
            raise Refused(-503, f"router shard {down[0]} (the owner of some of these users) is unreachable")
        return self.loop.create_task(self.router.streams.push_mids(op, mids, body))

    def deliver_mids(
        self, local: int, op: int, mids: list[int], seqs: list[int], body: bytes
    ) -> int | Awaitable[int]:
        groups: dict[int, tuple[list[int], list[int]]] = {}
        for mid, seq in zip(mids, seqs, strict=True):
            shard = self.owner(mid)
            if shard != self.shard:
                group = groups.setdefault(shard, ([], []))
                group[0].append(mid)
                group[1].append(seq)
        if not groups:
            return local
        peers = self._peers()
        calls = [peers.call(k, functools.partial(_mids, op, m, s, body)) for k, (m, s) in groups.items()]
        return self._summed(local, calls)

    async def _summed(self, local: int, calls: list[asyncio.Future[ShardAnswer]]) -> int:
        found = local
        failed: Refused | None = None
        for answer in await answers(calls):
            if isinstance(answer, ShardAnswer):
                found += answer.count
            elif isinstance(answer, Refused):
                failed = failed if failed is not None and failed.code == -504 else answer
            else:
                raise answer
        if failed is not None:
            raise Refused(failed.code, f"delivered to {found} connections; {failed.message}")
        return found

    def push_room(self, op: int, room: str, body: bytes, here: Here) -> asyncio.Future[None]:
        return here()

    def push_all(
        self, op: int, speed: int, body: bytes, here: Callable[[int], asyncio.Future[None]]
    ) -> asyncio.Future[None]:
        return here(speed)

    # -- numbers ---------------------------------------------------------------------------------
    def room_online(self, room: str) -> int:
        return self.store.online(room)  # (what a worker is told: it sums the shards' counts)

    async def online_elsewhere(self, mids: list[int]) -> set[int]:
        groups: dict[int, list[int]] = {}
        for mid in mids:
            if self.owner(mid) != self.shard:
                groups.setdefault(self.owner(mid), []).append(mid)
        if not groups:
            return set()
        peers = self._peers()
        calls = [peers.call(k, functools.partial(_presence, g)) for k, g in groups.items()]
        online: set[int] = set()
        for answer in await answers(calls):
            if isinstance(answer, ShardAnswer):  # (an unreachable shard's users: not known online)
                online.update(answer.mids)
        return online

    async def _numbers(self) -> list[ShardAnswer]:
        peers = self._peers()
        mine = self.numbers(0)
        calls = [peers.call(k, ShardNumbers) for k in peers.others()]
        got = [a for a in await answers(calls) if isinstance(a, ShardAnswer)]
        return [mine, *got]

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

    async def worker_conns(self) -> dict[str, int]:
        """Connections per worker over every shard."""
        out: dict[str, int] = {}
        for n in await self._numbers():
            for worker, count in n.workers.items():
                out[worker] = out.get(worker, 0) + count
        return out

    def hosts(self) -> None:
        return None

    async def sessions(self, key: str, mid: int) -> list[SessionRow]:
        """The connections with ``key`` (or of user ``mid``) on every shard."""
        peers = self._peers()
        shards = peers.others() if key else [self.owner(mid)]
        calls = [peers.call(k, functools.partial(_sessions, key, mid)) for k in shards if k != self.shard]
        rows = self.rows(key, mid)
        for answer in await answers(calls):
            if isinstance(answer, ShardAnswer):
                rows += answer.sessions
        return rows

    def rows(self, key: str, mid: int) -> list[SessionRow]:
        store = self.store
        if key:
            conn = store.conn_of(key)
            conns = [conn] if conn is not None else []
        else:
            conns = store.conns_of(mid)
        return [SessionRow(c.key, c.mid, c.seq, c.worker.id, c.room, c.ip) for c in conns]

    # -- calls from the other shards -----------------------------------------------------------------
    def serve(self, call: ShardCall) -> ShardAnswer:
        push = self.router.push
        match call:
            case ShardKeys():
                return ShardAnswer(call.req, count=push.send_keys(call.op, call.keys, call.body))
            case ShardMids():
                refusal = self.router.workers.refusal()
                if refusal:  # (stored: the users' devices read it back when they resume)
                    raise Refused(-503, f"router shard {self.shard}: {refusal}")
                return ShardAnswer(call.req, count=push.send_mids(call.op, call.mids, call.seqs, call.body))
            case ShardPresence():
                conns_of = self.store.conns_of
                return ShardAnswer(call.req, mids=[mid for mid in call.mids if conns_of(mid)])
            case ShardNumbers():
                return self.numbers(call.req)
            case ShardSessions():
                return ShardAnswer(call.req, sessions=self.rows(call.key, call.mid))
            case ShardClaim():
                held = self.claims.claim(call.shard, call.key, call.mid)
                return ShardAnswer(call.req, mids=[] if held is None else [held])
            case ShardRelease():
                self.claims.release(call.shard, call.key, call.mid)
                return ShardAnswer(call.req)
            case ShardClaims():
                conflicts = self.claims.replace(call.shard, list(zip(call.keys, call.mids, strict=True)))
                return ShardAnswer(call.req, count=conflicts)
        raise TypeError(f"unknown shard call {call!r}")

    def numbers(self, req: int) -> ShardAnswer:
        store = self.store
        workers = {info.id: len(info.conns) for info in store.workers.values()}
        return ShardAnswer(
            req, count=len(store), rooms=store.room_counts(), ips=store.ip_total, workers=workers
        )


def _mids(op: int, mids: list[int], seqs: list[int], body: bytes, req: int) -> ShardMids:
    return ShardMids(req, op, mids, seqs, body)


def _claim(shard: int, key: str, mid: int, req: int) -> ShardClaim:
    return ShardClaim(req, shard, key, mid)


def _release(shard: int, key: str, mid: int, req: int) -> ShardRelease:
    return ShardRelease(req, shard, key, mid)


def _claims(shard: int, keys: list[str], mids: list[int], req: int) -> ShardClaims:
    return ShardClaims(req, shard, keys, mids)


def _ignore(done: asyncio.Future[ShardAnswer]) -> None:
    if not done.cancelled():
        done.exception()  # (retrieved: a release or refile that failed needs no answer)


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


__all__ = ["ShardFabric"]
