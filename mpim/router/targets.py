"""Who one push names: the mids and keys of a push by mid or by key, checked at every ingress.

A mid is a user id: an integer from 1 to 2**63 - 1 (int64, > 0) everywhere — the
HTTP API, ``POST /mpim/push`` and the ZeroMQ ingress. 0 is the anonymous connection of
goim's json tokens, which has no user stream, so it cannot be pushed to by mid. One
push names at most ``[router] max_targets`` distinct mids (or keys): each distinct mid
is one append to that user's inbox, whether the user ever connected or not, so the
limit bounds what one request can make the router write. Duplicates count once (they
are stored and sent once). A refusal is a :class:`~mpim.limits.BadRequest` (-400)
naming the bad value or the count and the limit.
"""

from __future__ import annotations

from collections.abc import Sequence

from mpim.limits import INT64, BadRequest

MID_MAX = INT64[1]
LIMIT_KEY = "[router] max_targets"


def _not_a_mid(name: str, value: object) -> BadRequest:
    text = str(value)
    shown = text if len(text) <= 40 else text[:20] + "..." + text[-8:]
    return BadRequest(f"{name}: {shown} is not a user id (a mid is an integer from 1 to {MID_MAX})")


def parse_mid(text: str, name: str = "mids") -> int:
    """A mid from a query parameter's text; :class:`BadRequest` naming the value otherwise."""
    try:
        value = int(text, 10)
    except ValueError:
        raise BadRequest(f"{name}: {text[:40]!r} is not an integer") from None
    if not 0 < value <= MID_MAX:
        raise _not_a_mid(name, value)
    return value


def distinct(values: Sequence[object]) -> int:
    """How many different targets: duplicates are stored and sent once, so they count once."""
    return len(set(values))


def over_limit(what: str, count: int, limit: int) -> BadRequest:
    return BadRequest(f"{count} {what} in one push; the limit is {limit} ({LIMIT_KEY})")


def check_count(what: str, values: Sequence[object], limit: int) -> None:
    """At most ``limit`` distinct values (counted only when the list is longer than the limit)."""
    if len(values) > limit:
        count = distinct(values)
        if count > limit:
            raise over_limit(what, count, limit)


def check_mids(mids: Sequence[int], limit: int, name: str = "mids") -> None:
    """Every mid a user id (1 .. 2**63 - 1) and at most ``limit`` distinct ones."""
    if not mids:
        raise BadRequest(f"{name}: at least one mid is required")
    if min(mids) <= 0 or max(mids) > MID_MAX:
        bad = next(mid for mid in mids if not 0 < mid <= MID_MAX)
        raise _not_a_mid(name, bad)
    check_count("mids", mids, limit)


def check_keys(keys: Sequence[str], limit: int) -> None:
    """At most ``limit`` distinct keys."""
    check_count("keys", keys, limit)
