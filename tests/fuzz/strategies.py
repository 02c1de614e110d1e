"""Hypothesis strategies shared by the fuzz tests and ``bench/fuzz_campaign.py``.

Byte streams are built from parts that sit close to the goim grammar (valid frames,
headers with one field off, truncated frames) mixed with plain random bytes, so
that generated inputs reach past the first length check.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from hypothesis import strategies as st

from mpim.proto import HEADER_SIZE, Op, encode

INT16 = st.integers(-(1 << 15), (1 << 15) - 1)
INT32 = st.integers(-(1 << 31), (1 << 31) - 1)
INT64_EDGE = st.sampled_from([0, 1, -1, (1 << 31) - 1, 1 << 31, (1 << 63) - 1, 1 << 63, -(1 << 63) - 1])
OPS = st.one_of(st.sampled_from([int(op) for op in Op] + [18, 20, 21, 1000, 1001]), INT32)

# Split points for feeding a stream in pieces; taken modulo the stream length.
CUTS = st.lists(st.integers(0, 1 << 16), max_size=12)

_HEADER = struct.Struct(">ihhii")


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` split at ``cuts`` (modulo its length); may contain empty pieces."""
    points = sorted(c % (len(data) + 1) for c in cuts)
    out: list[bytes] = []
    start = 0
    for point in [*points, len(data)]:
        out.append(data[start:point])
        start = point
    return out


def raw_header(pack_len: int, header_len: int, ver: int, op: int, seq: int) -> bytes:
    return _HEADER.pack(pack_len, header_len, ver, op, seq)


def frames(max_body: int, body: st.SearchStrategy[bytes] | None = None) -> st.SearchStrategy[bytes]:
    """One valid encoded frame whose body fits ``max_body``."""
    body = body if body is not None else st.binary(max_size=min(max_body, 80))
    return st.builds(
        encode,
        OPS,
        body.filter(lambda b: len(b) <= max_body),
        INT16,
        INT32,
    )


def headers(max_body: int) -> st.SearchStrategy[bytes]:
    """A 16-byte header: often valid, often with packLen or headerLen just off."""
    limit = HEADER_SIZE + max_body
    pack_len = st.one_of(st.integers(HEADER_SIZE, limit), st.integers(-2, limit + 2), INT32)
    header_len = st.one_of(st.just(HEADER_SIZE), st.sampled_from([0, 15, 17, -16]), INT16)
    return st.builds(raw_header, pack_len, header_len, INT16, OPS, INT32)


def stream_parts(max_body: int) -> st.SearchStrategy[bytes]:
    valid = frames(max_body)
    return st.one_of(
        valid,
        valid.flatmap(lambda f: st.integers(0, len(f)).map(lambda n: f[:n])),  # truncated
        headers(max_body),
        st.binary(max_size=40),
    )


@st.composite
def goim_streams(draw: st.DrawFn) -> tuple[int, bytes]:
    """(max_body, bytes): goim-ish streams, with some plain random bytes."""
    max_body = draw(st.one_of(st.integers(0, 64), st.just(4096)))
    if draw(st.integers(0, 9)) == 0:
        return max_body, draw(st.binary(max_size=512))
    return max_body, b"".join(draw(st.lists(stream_parts(max_body), max_size=8)))


# -- JSON values and tokens ------------------------------------------------------------------

_JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    INT64_EDGE,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
JSON_VALUES = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

_ROOM_TEXT = st.one_of(
    st.sampled_from(["", "live://1000", "live://", "a" * 257, "live://\x00", "\ud800", "é" * 200]),
    st.text(max_size=20),
)
_CLAIM = {
    "mid": st.one_of(st.integers(), INT64_EDGE, JSON_VALUES),
    "key": st.one_of(
        st.text(max_size=10), st.text(min_size=120, max_size=140), st.just("\udcff"), JSON_VALUES
    ),
    "room_id": st.one_of(_ROOM_TEXT, JSON_VALUES),
    "platform": st.one_of(st.sampled_from(["web", "ios", "\ud83d"]), st.text(max_size=40), JSON_VALUES),
    "accepts": st.one_of(st.lists(st.one_of(INT32, INT64_EDGE, JSON_VALUES), max_size=5), JSON_VALUES),
    "caps": st.one_of(st.lists(st.sampled_from(["ack", "seq", "x"])), JSON_VALUES),
    "exp": st.one_of(st.integers(), st.floats(), st.sampled_from([4102444800, 0]), JSON_VALUES),
}
CLAIMS = st.fixed_dictionaries({}, optional=_CLAIM).flatmap(
    lambda d: st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=2).map(lambda extra: {**extra, **d})
)


def _dumps(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# Around the default recursion limit (1000) and the one Hypothesis sets while a test runs (~2000 + depth).
NEST_DEPTHS = st.one_of(st.integers(0, 40), st.integers(950, 1100), st.integers(1900, 3200))


def nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return (opener * depth + "0" + closer * depth).encode()


JSON_TOKENS = st.one_of(
    st.builds(_dumps, CLAIMS, st.booleans()),
    st.builds(_dumps, JSON_VALUES, st.booleans()),
    st.builds(nested, NEST_DEPTHS, st.sampled_from(["[", '{"a":'])),
    st.binary(max_size=64),
    st.text(max_size=64).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
