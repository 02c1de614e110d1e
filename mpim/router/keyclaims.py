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

import logging

log = logging.getLogger("mpim.router")


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


__all__ = ["KeyClaims"]
