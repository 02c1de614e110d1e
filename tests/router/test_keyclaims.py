"""Key claims across router shards: one user per key, claims tagged with the shard that filed them."""

from __future__ import annotations

from mpim.router.keyclaims import KeyClaims


def test_one_user_per_key_and_only_the_filing_shard_releases_it() -> None:
    claims = KeyClaims()
    assert claims.claim(0, "k", 7) is None
    assert claims.claim(1, "k", 8) == 7  # another user: denied, nothing filed
    assert claims.claim(1, "k", 7) is None  # the same user through another shard: it moves
    claims.release(0, "k", 7)  # (the old shard's release of a claim that moved: ignored)
    assert claims.holders == {"k": (7, 1)}
    claims.release(1, "k", 8)  # another user's: ignored
    assert claims.holders == {"k": (7, 1)}
    claims.release(1, "k", 7)
    assert claims.claim(2, "k", 8) is None and len(claims) == 1


def test_a_shards_claims_are_replaced_whole_and_dropped_with_it() -> None:
    claims = KeyClaims()
    claims.claim(0, "a", 1)
    claims.claim(0, "b", 2)
    claims.claim(1, "c", 3)
    assert claims.replace(0, [("a", 1), ("c", 9), ("d", 4)]) == 1  # c is user 3's: kept
    assert claims.holders == {"a": (1, 0), "c": (3, 1), "d": (4, 0)}
    assert claims.drop(0) == 2 and claims.holders == {"c": (3, 1)}
    assert claims.drop(5) == 0
