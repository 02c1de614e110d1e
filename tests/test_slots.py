"""Slots: Redis Cluster's hash, stable ranges, and a change of shard count that moves ranges."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mpim.slots import SLOTS, owner, owner_of_mid, shard_of_slot, slot_of_key, slot_of_mid, split_mids


def test_the_slot_is_redis_clusters_key_slot() -> None:
    # (values from Redis Cluster's own CLUSTER KEYSLOT: "123456789" -> 12739, "foo" -> 12182)
    assert slot_of_key("123456789") == 12739
    assert slot_of_key("foo") == 12182
    assert slot_of_mid(123456789) == 12739


@given(st.integers(min_value=1, max_value=2**63 - 1), st.integers(min_value=1, max_value=64))
def test_every_mid_has_one_owner_in_range(mid: int, shards: int) -> None:
    shard = owner_of_mid(mid, shards)
    assert 0 <= shard < shards
    assert owner(mid, "any-key", shards) == shard
    assert split_mids([mid], shards) == {shard: [mid]}


@given(st.integers(min_value=1, max_value=32))
def test_shards_hold_contiguous_ranges_and_doubling_only_splits_them(shards: int) -> None:
    owners = [shard_of_slot(s, shards) for s in range(SLOTS)]
    assert owners == sorted(owners) and set(owners) == set(range(shards))
    doubled = [shard_of_slot(s, 2 * shards) for s in range(SLOTS)]
    assert all(d // 2 == o for d, o in zip(doubled, owners, strict=True))


def test_a_connection_without_a_user_is_placed_by_its_key() -> None:
    assert owner(0, "k", 4) == shard_of_slot(slot_of_key("k"), 4)
    assert owner(0, "k", 1) == 0 and split_mids([5, 6], 1) == {0: [5, 6]}
