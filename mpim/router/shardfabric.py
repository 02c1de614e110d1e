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
    ShardExposition,
    ShardKeys,
    ShardMids,
    ShardNumbers,
    ShardPresence,
    ShardPush,
    ShardRelease,
    ShardSessions,
)
from mpim.router.errors import Refused
from mpim.router.fabric import Here
from mpim.router.keyclaims import KeyKeeper
from mpim.router.shardlink import ShardPeers, ShardSite, answers
from mpim.router.shardviews import ShardViews

if TYPE_CHECKING:
    from mpim.router.core import Router
    from mpim.router.streams import Stored


class ShardFabric:
    """The pushes of a shard among several; its keys (:class:`KeyKeeper`) and its numbers for the
    host (:class:`ShardViews`) are pieces of their own."""

    name = ""  # one host

    def __init__(self, router: Router, shard: int, shards: int) -> None:
        self.site = site = ShardSite(router, shard, shards)
        self.stats: dict[str, int] = {}
        self.keys = KeyKeeper(site)
        self.views = ShardViews(site)
        router.push.every_worker = True  # (a room's members on the other shards are not known here)

    @property
    def peers(self) -> ShardPeers | None:
        return self.site.link

    @peers.setter
    def peers(self, peers: ShardPeers | None) -> None:
        self.site.link = peers

    # -- this shard's sessions: their keys ---------------------------------------------------------
    def file(self, key: str, mid: int) -> asyncio.Future[int | None] | None:
        return self.keys.file(key, mid)

    def unfile(self, key: str, mid: int) -> None:
        self.keys.unfile(key, mid)

    def room_opened(self, room: str) -> None:
        return None

    def sessions_changed(self) -> None:
        self.keys.sessions_changed()

    def refile(self, keeper: int) -> None:
        """This shard's link to ``keeper`` came up: file its keys there again, whole."""
        self.keys.refile(keeper)

    def shard_gone(self, shard: int) -> None:
        self.keys.shard_gone(shard)

    def refusal(self) -> str:
        return ""

    # -- pushes --------------------------------------------------------------------------------
    def push_keys(self, local: int, op: int, keys: list[str], body: bytes) -> asyncio.Future[int]:
        peers = self.site.peers
        calls = [peers.call(k, functools.partial(_keys, op, keys, body)) for k in peers.others()]
        return self.site.loop.create_task(_summed(local, calls))

    def push_mids(self, op: int, mids: list[int], body: bytes) -> asyncio.Future[Stored]:
        """Each owner stores and hands out its users' part (this shard's at once, the others' one
        hop away); the answer adds them up."""
        site = self.site
        groups = slots.split_mids(list(dict.fromkeys(mids)), site.shards)
        down = sorted(k for k in groups if k != site.shard and not site.peers.up(k))
        if down:
            raise Refused(-503, f"router shard {down[0]} (the owner of some of these users) is unreachable")
        streams = self.site.router.streams
        here = groups.pop(site.shard, None)
        parts: list[asyncio.Future[Stored]] = []
        if here:
            parts.append(streams.push_mids_here(op, here, body))
            if not groups:
                return parts[0]
        for k, group in groups.items():
            parts.append(_stored(site.loop, site.peers.call(k, functools.partial(_push, op, group, body))))
        return _joined(site.loop, parts)

    def deliver_mids(
        self, local: int, op: int, mids: list[int], seqs: list[int], body: bytes
    ) -> int | Awaitable[int]:
        site = self.site
        groups: dict[int, tuple[list[int], list[int]]] = {}
        for mid, seq in zip(mids, seqs, strict=True):
            shard = site.owner(mid)
            if shard != site.shard:
                group = groups.setdefault(shard, ([], []))
                group[0].append(mid)
                group[1].append(seq)
        if not groups:
            return local
        calls = [site.peers.call(k, functools.partial(_mids, op, m, s, body)) for k, (m, s) in groups.items()]
        return _summed(local, calls)

    def push_room(self, op: int, room: str, body: bytes, here: Here) -> asyncio.Future[None]:
        return here()

    def push_all(
        self, op: int, speed: int, body: bytes, here: Callable[[int], asyncio.Future[None]]
    ) -> asyncio.Future[None]:
        return here(speed)

    # -- numbers (the views') ------------------------------------------------------------------------
    def room_online(self, room: str) -> int:
        return self.site.store.online(room)  # (what a worker is told: it sums the shards' counts)

    def online_elsewhere(self, mids: list[int]) -> Awaitable[set[int]]:
        return self.views.online_elsewhere(mids)

    def top_rooms(self, prefix: str, limit: int) -> Awaitable[list[tuple[str, int]]]:
        return self.views.top_rooms(prefix, limit)

    def online_rooms(self, rooms: list[str]) -> Awaitable[dict[str, int]]:
        return self.views.online_rooms(rooms)

    def totals(self) -> Awaitable[Totals]:
        return self.views.totals()

    def worker_conns(self) -> Awaitable[dict[str, int]]:
        return self.views.worker_conns()

    def sessions(self, key: str, mid: int) -> Awaitable[list[SessionRow]]:
        return self.views.sessions(key, mid)

    def hosts(self) -> None:
        return None

    # -- calls from the other shards -----------------------------------------------------------------
    def serve(self, call: ShardCall) -> ShardAnswer | asyncio.Future[ShardAnswer]:
        push = self.site.router.push
        match call:
            case ShardPush():
                push.refuse_unless_ready()
                return _answered(
                    self.site.loop,
                    call.req,
                    call.mids,
                    self.site.router.streams.push_mids_here(call.op, call.mids, call.body),
                )
            case ShardKeys():
                return ShardAnswer(call.req, count=push.send_keys(call.op, call.keys, call.body))
            case ShardMids():
                refusal = self.site.router.workers.refusal()
                if refusal:  # (stored: the users' devices read it back when they resume)
                    raise Refused(-503, f"router shard {self.site.shard}: {refusal}")
                return ShardAnswer(call.req, count=push.send_mids(call.op, call.mids, call.seqs, call.body))
            case ShardPresence():
                return self.views.presence(call.req, call.mids)
            case ShardNumbers():
                return self.views.numbers(call.req, call.brief)
            case ShardSessions():
                return ShardAnswer(call.req, sessions=self.views.rows(call.key, call.mid))
            case ShardClaim() | ShardRelease() | ShardClaims():
                return self.keys.serve(call)
            case ShardExposition():
                return self.views.exposition_of(call.req)
        raise TypeError(f"unknown shard call {call!r}")


async def _summed(local: int, calls: list[asyncio.Future[ShardAnswer]]) -> int:
    """``local`` and the connections the other shards took; Refused saying what was done if one
    of them refused or did not answer."""
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


def _push(op: int, mids: list[int], body: bytes, req: int) -> ShardPush:
    return ShardPush(req, op, mids, body)


def _stored(loop: asyncio.AbstractEventLoop, call: asyncio.Future[ShardAnswer]) -> asyncio.Future[Stored]:
    """Another owner's answer to a ShardPush as (connections, {mid: seq})."""
    out: asyncio.Future[Stored] = loop.create_future()

    def then(done: asyncio.Future[ShardAnswer]) -> None:
        exc = done.exception() if not done.cancelled() else Refused(-504, "cancelled")
        if exc is not None:
            out.set_exception(exc)
        else:
            answer = done.result()
            out.set_result((answer.count, dict(zip(answer.mids, answer.seqs, strict=True))))

    call.add_done_callback(then)
    return out


def _joined(loop: asyncio.AbstractEventLoop, parts: list[asyncio.Future[Stored]]) -> asyncio.Future[Stored]:
    """The owners' parts of one push as one answer. When some failed, Refused: -503 if every part
    was refused (nothing stored), else -504 naming what was delivered (some users have it)."""
    out: asyncio.Future[Stored] = loop.create_future()
    left = len(parts)

    def one(_: asyncio.Future[Stored]) -> None:
        nonlocal left
        left -= 1
        if left:
            return
        found, seqs, failures = 0, {}, []
        for part in parts:
            exc = part.exception() if not part.cancelled() else Refused(-504, "cancelled")
            if exc is None:
                connections, part_seqs = part.result()
                found += connections
                seqs.update(part_seqs)
            else:
                failures.append(exc)
        if not failures:
            out.set_result((found, seqs))
            return
        first = failures[0]
        message = first.message if isinstance(first, Refused) else str(first)
        refused = all(isinstance(f, Refused) and f.code == -503 for f in failures)
        if refused and len(failures) == len(parts):
            out.set_exception(Refused(-503, message))
        else:
            out.set_exception(
                Refused(-504, f"stored for {len(seqs)} users, delivered to {found} connections; {message}")
            )

    for part in parts:
        part.add_done_callback(one)
    return out


def _answered(
    loop: asyncio.AbstractEventLoop, req: int, mids: list[int], stored: asyncio.Future[Stored]
) -> asyncio.Future[ShardAnswer]:
    out: asyncio.Future[ShardAnswer] = loop.create_future()

    def then(done: asyncio.Future[Stored]) -> None:
        exc = done.exception() if not done.cancelled() else Refused(-504, "cancelled")
        if exc is not None:
            out.set_exception(exc)
            return
        connections, seqs = done.result()
        unique = list(dict.fromkeys(mids))
        out.set_result(
            ShardAnswer(req, count=connections, mids=unique, seqs=[seqs.get(m, 0) for m in unique])
        )

    stored.add_done_callback(then)
    return out


def _keys(op: int, keys: list[str], body: bytes, req: int) -> ShardKeys:
    return ShardKeys(req, op, keys, body)


def _mids(op: int, mids: list[int], seqs: list[int], body: bytes, req: int) -> ShardMids:
    return ShardMids(req, op, mids, seqs, body)


__all__ = ["ShardFabric"]
