"""Which router shard owns a user: a fixed number of slots, mapped onto the shards.

A user (``mid > 0``) lives in slot ``CRC16(str(mid)) % SLOTS`` — Redis Cluster's key slot
of the decimal mid, so a later Redis Cluster layout can keep a user's keys together. A
connection without a user (``mid`` 0) is placed by its key the same way. The slot count is
fixed for the life of the data (the inbox records it); the shards split the slots in
contiguous ranges, ``shard = slot * shards // SLOTS``, so changing the number of shards
moves whole ranges of slots and never rehashes a user.
"""

from __future__ import annotations

from binascii import crc_hqx

SLOTS = 16384


def slot_of_mid(mid: int) -> int:
    return crc_hqx(str(mid).encode(), 0) % SLOTS


def slot_of_key(key: str) -> int:
    return crc_hqx(key.encode("utf-8", "surrogateescape"), 0) % SLOTS


def shard_of_slot(slot: int, shards: int) -> int:
    return slot * shards // SLOTS


def owner(mid: int, key: str, shards: int) -> int:
    """The shard that owns a connection: its user's, or (no user) its key's."""
    if shards <= 1:
        return 0
    slot = slot_of_mid(mid) if mid > 0 else slot_of_key(key)
    return slot * shards // SLOTS


def owner_of_mid(mid: int, shards: int) -> int:
    return 0 if shards <= 1 else slot_of_mid(mid) * shards // SLOTS


def split_mids(mids: list[int], shards: int) -> dict[int, list[int]]:
    """Mids grouped by owning shard, each group in the order given."""
    if shards <= 1:
        return {0: mids}
    groups: dict[int, list[int]] = {}
    for mid in mids:
        groups.setdefault(slot_of_mid(mid) * shards // SLOTS, []).append(mid)
    return groups
