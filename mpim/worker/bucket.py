"""Buckets: the worker's authenticated channels, sharded by a hash of their key.

goim shards channels into buckets to spread lock contention; one event loop has
no locks, so here a bucket is the unit of *walking*: a paced push to everyone
(:mod:`mpim.worker.broadcast`) and a full session report to the router go bucket
by bucket, and a bucket's size is a cheap statistic. Lookups by key cost one
hash and one dict read either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mpim.worker.channel import Channel


class Bucket:
    __slots__ = ("channels",)

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}

    def __len__(self) -> int:
        return len(self.channels)

    def __iter__(self) -> Iterator[Channel]:
        return iter(tuple(self.channels.values()))

    def get(self, key: str) -> Channel | None:
        return self.channels.get(key)

    def put(self, key: str, channel: Channel) -> Channel | None:
        """File ``channel`` under ``key``; returns the channel it displaced, if any."""
        old = self.channels.get(key)
        self.channels[key] = channel
        return old if old is not channel else None

    def remove(self, key: str, channel: Channel) -> bool:
        """Forget ``channel`` unless a newer connection already owns the key."""
        if self.channels.get(key) is channel:
            del self.channels[key]
            return True
        return False


class Buckets:
    __slots__ = ("_buckets", "_count")

    def __init__(self, count: int) -> None:
        self._buckets = [Bucket() for _ in range(count)]
        self._count = count

    def __iter__(self) -> Iterator[Bucket]:
        return iter(self._buckets)

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)

    def of(self, key: str) -> Bucket:
        return self._buckets[hash(key) % self._count]

    def get(self, key: str) -> Channel | None:
        return self._buckets[hash(key) % self._count].channels.get(key)
