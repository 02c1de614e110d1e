"""PROXY protocol v1/v2 parsing: whole, byte at a time, with the client's bytes behind, and every refusal."""

from __future__ import annotations

import struct

import pytest

from mpim.proxyproto import (
    V2_SIGNATURE,
    Parsed,
    ProxyError,
    ProxyHeader,
    header_v1,
    header_v2,
    parse,
)

CLIENT = b"\x00\x00\x00\x1a\x00\x10\x00\x01\x00\x00\x00\x07\x00\x00\x00\x01token12345"  # a goim Auth


def byte_at_a_time(data: bytes) -> Parsed:
    """Feed growing prefixes, as a reader that consumes need-more bytes would."""
    for end in range(len(data) + 1):
        got = parse(data[:end])
        if got is not None:
            return got
    raise AssertionError("never complete")


@pytest.mark.parametrize(
    ("header", "source", "dest"),
    [
        (b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 3101\r\n", ("203.0.113.7", 51234), ("10.0.0.1", 3101)),
        (b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n", ("2001:db8::7", 65535), ("2001:db8::1", 0)),
        (header_v2(("198.51.100.9", 4000), ("10.0.0.1", 3103)), ("198.51.100.9", 4000), ("10.0.0.1", 3103)),
        (header_v2(("2001:db8::9", 1), ("2001:db8::1", 2)), ("2001:db8::9", 1), ("2001:db8::1", 2)),
        (header_v2(("192.0.2.1", 80), None, tlvs=b"\x04\x00\x03abc"), ("192.0.2.1", 80), ("0.0.0.0", 0)),
    ],
)
def test_a_header_gives_the_client_address_whole_byte_at_a_time_and_with_data_behind(
    header: bytes, source: tuple[str, int], dest: tuple[str, int]
) -> None:
    version = 1 if header.startswith(b"PROXY") else 2
    expected = Parsed(ProxyHeader(version, source, dest), len(header))
    assert parse(header) == expected
    assert byte_at_a_time(header) == expected
    assert parse(header + CLIENT) == expected  # the client's bytes are not the header's
    assert (header + CLIENT)[expected.length :] == CLIENT


@pytest.mark.parametrize("header", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n"])
def test_v1_unknown_has_no_address(header: bytes) -> None:
    assert parse(header + b"x") == Parsed(ProxyHeader(1, None, None), len(header))


def test_v2_local_and_non_tcp_families_have_no_address() -> None:
    local = header_v2(None)
    assert parse(local + CLIENT) == Parsed(ProxyHeader(2, None, None), 16)
    unix = V2_SIGNATURE + bytes([0x21, 0x31]) + struct.pack("!H", 216) + bytes(216)
    assert parse(unix) == Parsed(ProxyHeader(2, None, None), len(unix))
    udp = V2_SIGNATURE + bytes([0x21, 0x12]) + struct.pack("!H", 12) + bytes(12)
    assert parse(udp) == Parsed(ProxyHeader(2, None, None), len(udp))


def test_the_builders_round_trip() -> None:
    assert parse(header_v1(("1.2.3.4", 5))) == Parsed(ProxyHeader(1, ("1.2.3.4", 5), ("0.0.0.0", 0)), 32)
    assert parse(header_v1(None)) == Parsed(ProxyHeader(1, None, None), 15)
    six = header_v1(("::1", 9), ("::2", 10))
    assert parse(six) == Parsed(ProxyHeader(1, ("::1", 9), ("::2", 10)), len(six))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (CLIENT, "starts with byte 0x00"),  # a goim client on a PROXY listener
        (b"GET /sub HTTP/1.1\r\n", "starts with byte 0x47"),
        (b"\x16\x03\x01\x02\x00", "starts with byte 0x16"),  # TLS ClientHello without a header
        (b"PROXZ TCP4", "neither signature"),
        (b"\r\n\r\n\x00\r\nQUIZ\n", "neither signature"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "not ended by CRLF"),
        (b"PROXY " + b"A" * 120, "not ended by CRLF"),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "is not 'TCP4|TCP6"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "is not 'TCP4|TCP6"),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "is not 'TCP4|TCP6"),
        (b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", "is not an IP address"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "is not IPv4"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "is not IPv6"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "out of range"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "not a decimal port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "not a decimal port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa3 2\r\n", "not ASCII"),
        (V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "version nibble is 1"),
        (V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), "command 2"),
        (V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), "too short for IPv4"),
        (V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12), "too short for IPv6"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "over the 4096-byte limit"),
    ],
)
def test_bad_headers_are_refused_naming_the_fault(data: bytes, why: str) -> None:
    with pytest.raises(ProxyError, match=why.replace("|", r"\|")):
        parse(data)
    with pytest.raises(ProxyError, match=why.replace("|", r"\|")):
        byte_at_a_time(data)  # refused as early as the prefix allows, never later than the whole


def test_need_more_only_for_prefixes_of_a_header() -> None:
    assert parse(b"") is None
    assert parse(b"PRO") is None
    assert parse(b"PROXY TCP4 1.2.3.4") is None
    assert parse(V2_SIGNATURE[:5]) is None
    assert parse(V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes(11)) is None
    with pytest.raises(ProxyError):
        parse(b"PROXY TCP4 1.2.3.4" + b" " * 100)


def test_the_limit_is_the_callers() -> None:
    header = header_v2(("1.2.3.4", 1), tlvs=bytes(100))
    assert parse(header, limit=len(header)) is not None
    with pytest.raises(ProxyError, match="over the 127-byte limit"):
        parse(header, limit=127)
