"""Which user holds a connection key, across the router shards of one host.

A key is unique on a host: a connection of another user is denied while the holder's lives
(one user may reconnect with the same key: the older connection is kicked by its owner's
tables). With router shards a user's connections are filed with the user's owner shard, so
two users' connections with one key may be filed on two shards; the shard that owns the
key's slot (:func:`mpim.slots.owner` with mid 0) keeps every claim on it, each tagged with the
shard that filed it. A shard's claims go when its link drops (it died, or restarted: it
files them again once its workers reported) and are replaced whole when it says so.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING

from mpim.records import ShardAnswer, ShardClaim, ShardClaims, ShardRelease

if TYPE_CHECKING:
    from mpim.router.shardlink import ShardSite

log = logging.getLogger("mpim.router")

REFILE_DELAY = 0.2  # a bulk change files the keys again this much later (one refile for a burst)


class KeyClaims:
    def __init__(self) -> None:
        self.holders: dict[str, tuple[int, int]] = {}  # key -> (mid, shard that filed it)
        self.by_shard: dict[int, set[str]] = {}

    def __len__(self) -> int:
        return len(self.holders)

    def claim(self, shard: int, key: str, mid: int) -> int | None:
        """File ``key`` for ``mid`` on behalf of ``shard``; the other user holding it (nothing
        filed), else None."""
        held = self.holders.get(key)
        if held is not None and held[0] != mid:
            return held[0]
        if held is not None and held[1] != shard:
            self.by_shard.get(held[1], set()).discard(key)
        self.holders[key] = (mid, shard)
        self.by_shard.setdefault(shard, set()).add(key)
        return None

    def release(self, shard: int, key: str, mid: int) -> None:
        if self.holders.get(key) == (mid, shard):
            del self.holders[key]
            self.by_shard.get(shard, set()).discard(key)

    def replace(self, shard: int, entries: list[tuple[str, int]]) -> int:
        """``shard``'s claims become exactly ``entries``; returns how many conflicted with another
        user's claim (those are not filed: the first holder keeps the key)."""
        self.drop(shard)
        conflicts = sum(1 for key, mid in entries if self.claim(shard, key, mid) is not None)
        if conflicts:
            log.warning(
                "router shard %d filed %d keys that other users hold; kept the holders'", shard, conflicts
            )
        return conflicts

    def drop(self, shard: int) -> int:
        keys = self.by_shard.pop(shard, set())
        for key in keys:
            if self.holders.get(key, (0, -1))[1] == shard:
                del self.holders[key]
        return len(keys)


class KeyKeeper:
    """This shard's part: its connections' keys filed with their keepers, the claims it keeps."""

    def __init__(self, site: ShardSite) -> None:
        self.site = site
        self.claims = KeyClaims()  # the keys whose slot this shard keeps
        self._refile_due = False

    def file(self, key: str, mid: int) -> asyncio.Future[int | None] | None:
        """Claim ``key`` with its keeper; a future of the other user holding it (deny), or None.
        A keeper out of reach cannot say: the connect is let through (as on a host without Redis)."""
        site = self.site
        keeper = site.keeper(key)
        if keeper == site.shard:
            held = self.claims.claim(site.shard, key, mid)
            if held is None:
                return None
            denied: asyncio.Future[int | None] = site.loop.create_future()
            denied.set_result(held)
            return denied
        call = site.peers.call(keeper, functools.partial(_claim, site.shard, key, mid))
        out: asyncio.Future[int | None] = site.loop.create_future()

        def then(done: asyncio.Future[ShardAnswer]) -> None:
            failed = done.cancelled() or done.exception() is not None
            if not out.done():
                out.set_result(None if failed or not done.result().mids else done.result().mids[0])

        call.add_done_callback(then)
        return out

    def unfile(self, key: str, mid: int) -> None:
        site = self.site
        keeper = site.keeper(key)
        if keeper == site.shard:
            self.claims.release(site.shard, key, mid)
            return
        release = site.peers.call(keeper, functools.partial(_release, site.shard, key, mid))
        release.add_done_callback(ignore)  # (a keeper that restarts drops the claim anyway)

    def sessions_changed(self) -> None:
        """A bulk change (a worker's full report, a worker gone): file every key again, soon."""
        if not self._refile_due:
            self._refile_due = True
            self.site.loop.call_later(REFILE_DELAY, self._refile_all)

    def _refile_all(self) -> None:
        self._refile_due = False
        for shard in range(self.site.shards):
            self.refile(shard)

    def refile(self, keeper: int) -> None:
        """Replace every claim this shard filed with ``keeper`` by what it holds now."""
        site = self.site
        mine = [
            (conn.key, conn.mid)
            for info in site.store.workers.values()
            for conn in info.conns.values()
            if site.keeper(conn.key) == keeper
        ]
        if keeper == site.shard:
            self.claims.replace(site.shard, mine)
            return
        keys, mids = [k for k, _ in mine], [m for _, m in mine]
        peers = site.peers
        if peers.up(keeper):
            peers.call(keeper, functools.partial(_claims, site.shard, keys, mids)).add_done_callback(ignore)

    def shard_gone(self, shard: int) -> None:
        """Another shard's link to this one closed: its claims go (it files them again)."""
        dropped = self.claims.drop(shard)
        if dropped:
            log.info("router shard %d: dropped %d key claims of shard %d", self.site.shard, dropped, shard)

    def serve(self, call: ShardClaim | ShardRelease | ShardClaims) -> ShardAnswer:
        """Another shard's claim, release or whole set of claims on keys this shard keeps."""
        match call:
            case ShardClaim():
                held = self.claims.claim(call.shard, call.key, call.mid)
                return ShardAnswer(call.req, mids=[] if held is None else [held])
            case ShardRelease():
                self.claims.release(call.shard, call.key, call.mid)
                return ShardAnswer(call.req)
            case ShardClaims():
                conflicts = self.claims.replace(call.shard, list(zip(call.keys, call.mids, strict=True)))
                return ShardAnswer(call.req, count=conflicts)


def _claim(shard: int, key: str, mid: int, req: int) -> ShardClaim:
    return ShardClaim(req, shard, key, mid)


def _release(shard: int, key: str, mid: int, req: int) -> ShardRelease:
    return ShardRelease(req, shard, key, mid)


def _claims(shard: int, keys: list[str], mids: list[int], req: int) -> ShardClaims:
    return ShardClaims(req, shard, keys, mids)


def ignore(done: asyncio.Future[ShardAnswer]) -> None:
    if not done.cancelled():
        done.exception()  # (retrieved: a release or refile that failed needs no answer)


__all__ = ["KeyClaims", "KeyKeeper", "ignore"]
