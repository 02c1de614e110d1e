"""PROXY protocol headers: whatever the bytes, a header, need-more, or ``ProxyError``.

Properties: ``parse`` raises nothing but ``ProxyError``; need-more (``None``) is
only ever answered for bytes that all belong to the header (a reader may
consume them), so it never asks to buffer more than the limit; however the
bytes are split, the first complete prefix gives the same header as the whole;
valid headers (random addresses, ports, TLVs, client bytes behind) round-trip.
"""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpim.proxyproto import V1_MAX, V2_SIGNATURE, ProxyError, header_v1, header_v2, parse
from tests.fuzz.strategies import CUTS, chunks

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = st.sampled_from([64, 256, 4096])

_V4 = st.ip_addresses(v=4).map(str)
_V6 = st.ip_addresses(v=6).map(str)
_PORT = st.integers(0, 65535)
_ENDPOINTS = st.one_of(
    st.tuples(st.tuples(_V4, _PORT), st.tuples(_V4, _PORT)),
    st.tuples(st.tuples(_V6, _PORT), st.tuples(_V6, _PORT)),
)


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    """Valid v1/v2 headers, LOCAL/UNKNOWN ones, and their bytes with a few mutations."""
    src, dst = draw(_ENDPOINTS)
    kind = draw(st.integers(0, 3))
    if kind == 0:
        data = header_v1(src, dst)
    elif kind == 1:
        data = header_v2(src, dst, draw(st.binary(max_size=64)))
    elif kind == 2:
        data = header_v2(None, None, draw(st.binary(max_size=16)))
    else:
        data = header_v1(None)
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        if buf and draw(st.booleans()):
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
        else:
            buf.insert(draw(st.integers(0, len(buf))), draw(st.integers(0, 255)))
    return bytes(buf)


STREAMS = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda a, b: a + b,
        st.sampled_from([b"PROXY ", V2_SIGNATURE, b"PROXY TCP4 "]),
        st.binary(max_size=200),
    ),
    st.builds(lambda h, tail: h + tail, headers(), st.binary(max_size=40)),
)


def outcome(data: bytes, limit: int) -> object:
    try:
        return parse(data, limit)
    except ProxyError:
        return ProxyError


def check_any(data: bytes, limit: int, cuts: list[int]) -> None:
    whole = outcome(data, limit)
    if whole is None:
        assert len(data) < max(V1_MAX, limit)  # need-more never asks to buffer past the limit
    elif whole is not ProxyError:
        assert 0 < whole.length <= len(data) and whole.length <= max(V1_MAX, limit)  # type: ignore[attr-defined]
        header = whole.header  # type: ignore[attr-defined]
        for end in (header.source, header.dest):
            if end is not None:
                ipaddress.ip_address(end[0])
                assert 0 <= end[1] <= 65535
    # A reader consumes need-more bytes and feeds what follows: the first prefix that
    # decides decides like the whole (a header, or a refusal), never later.
    fed = b""
    for piece in chunks(data, cuts):
        fed += piece
        got = outcome(fed, limit)
        if got is None:
            continue
        if got is ProxyError:
            assert whole is ProxyError
        else:
            assert got == whole
        return
    assert whole is None


def check_roundtrip(src: tuple[str, int], dst: tuple[str, int], v2: bool, tlvs: bytes, tail: bytes) -> None:
    header = header_v2(src, dst, tlvs) if v2 else header_v1(src, dst)
    got = parse(header + tail)
    assert got is not None and got.length == len(header)
    expect = lambda end: (str(ipaddress.ip_address(end[0])), end[1])  # noqa: E731
    assert got.header.source == expect(src) and got.header.dest == expect(dst)
    assert got.header.version == (2 if v2 else 1)


TARGETS = [
    ("proxyproto.any", st.tuples(STREAMS, LIMITS, CUTS), lambda a: check_any(*a)),
    (
        "proxyproto.roundtrip",
        st.tuples(_ENDPOINTS, st.booleans(), st.binary(max_size=100), st.binary(max_size=40)),
        lambda a: check_roundtrip(a[0][0], a[0][1], a[1], a[2], a[3]),
    ),
]


@FAST
@given(STREAMS, LIMITS, CUTS)
def test_any_bytes_give_a_header_need_more_or_proxy_error(data: bytes, limit: int, cuts: list[int]) -> None:
    check_any(data, limit, cuts)


@FAST
@given(_ENDPOINTS, st.booleans(), st.binary(max_size=100), st.binary(max_size=40))
def test_valid_headers_round_trip(
    ends: tuple[tuple[str, int], tuple[str, int]], v2: bool, tlvs: bytes, tail: bytes
) -> None:
    check_roundtrip(ends[0], ends[1], v2, tlvs, tail)
