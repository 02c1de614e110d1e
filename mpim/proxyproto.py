"""PROXY protocol v1 and v2 (HAProxy's), sans-I/O: the header a load balancer sends first.

A load balancer that forwards a client's TCP connection opens its own
connection to us, so the socket's peer is the balancer. With the PROXY protocol
it first writes one header naming the client's address; everything after the
header is the client's own bytes (goim frames, an HTTP upgrade, a TLS
ClientHello).

:func:`parse` takes the bytes received so far and returns

- ``None``: not enough bytes yet, and every byte given belongs to the header
  (so a caller may consume them all and wait for more);
- a :class:`Parsed` with the :class:`ProxyHeader` and its length in bytes
  (what follows belongs to the client);

or raises :class:`ProxyError` (the peer's fault: close the connection). It
touches no socket. ``header_v1`` / ``header_v2`` build headers (tests, benchmarks).

v1 is one text line, ``PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n`` (at most
107 bytes), or ``PROXY UNKNOWN ...\\r\\n``. v2 is a 16-byte binary prefix (a
12-byte signature, version/command, family/transport, length) and then the
addresses and optional TLVs, which we skip. ``LOCAL`` (v2) and ``UNKNOWN`` (v1)
headers, sent by balancers' health checks, carry no client address: ``source``
is ``None`` and the socket's own peer stands for the client.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the spec's longest v1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
DEFAULT_LIMIT = 4096  # longest v2 header we buffer (addresses and TLVs); the spec allows 65,551

_V2_HEAD = struct.Struct("!12sBBH")
_FAMILIES = {0x1: 4, 0x2: 6}  # AF_INET, AF_INET6 (the high nibble of the family byte)
_ADDR_LEN = {4: 12, 6: 36}  # src + dst address and two ports


class ProxyError(Exception):
    """The bytes are not a PROXY header: the peer's fault (close the connection)."""


class ProxyHeader(NamedTuple):
    version: int  # 1 or 2
    source: tuple[str, int] | None  # the client's (ip, port); None: LOCAL / UNKNOWN / not TCP over IP
    dest: tuple[str, int] | None  # the address the client connected to


class Parsed(NamedTuple):
    header: ProxyHeader
    length: int  # bytes of the header; the client's own bytes start here


def parse(data: bytes, limit: int = DEFAULT_LIMIT) -> Parsed | None:
    """The header at the start of ``data``, ``None`` if more bytes are needed, or :class:`ProxyError`."""
    if not data:
        return None
    if data[0] == V1_PREFIX[0]:
        return _parse_v1(data)
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data, limit)
    raise ProxyError(f"no PROXY header: the connection starts with byte 0x{data[0]:02x}")


def _parse_v1(data: bytes) -> Parsed | None:
    head = data[: len(V1_PREFIX)]
    if head != V1_PREFIX[: len(head)]:
        raise ProxyError("no PROXY header: the connection starts with neither signature")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data[:V1_MAX]:
            raise ProxyError(f"PROXY v1 line not ended by CRLF within {V1_MAX} bytes")
        return None
    try:
        line = data[len(V1_PREFIX) : end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyError("PROXY v1 line is not ASCII") from None
    parts = line.split(" ")
    if parts[0] == "UNKNOWN":
        return Parsed(ProxyHeader(1, None, None), end + 2)
    if len(parts) != 5 or parts[0] not in ("TCP4", "TCP6"):
        raise ProxyError(f"PROXY v1 line is not 'TCP4|TCP6 src dst sport dport': {line[:80]!r}")
    version = 4 if parts[0] == "TCP4" else 6
    src, dst = _v1_ip(parts[1], version), _v1_ip(parts[2], version)
    sport, dport = _v1_port(parts[3]), _v1_port(parts[4])
    return Parsed(ProxyHeader(1, (src, sport), (dst, dport)), end + 2)


def _v1_ip(text: str, version: int) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyError(f"PROXY v1 address {text[:45]!r} is not an IP address") from None
    if ip.version != version:
        raise ProxyError(f"PROXY v1 address {text!r} is not IPv{version}")
    return str(ip)


def _v1_port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or (len(text) > 1 and text[0] == "0"):
        raise ProxyError(f"PROXY v1 port {text[:8]!r} is not a decimal port number")
    port = int(text)
    if port > 65535:
        raise ProxyError(f"PROXY v1 port {port} is out of range")
    return port


def _parse_v2(data: bytes, limit: int) -> Parsed | None:
    head = data[:V2_FIXED]
    sig = head[: len(V2_SIGNATURE)]
    if sig != V2_SIGNATURE[: len(sig)]:
        raise ProxyError("no PROXY header: the connection starts with neither signature")
    if len(head) > 12 and head[12] >> 4 != 2:
        raise ProxyError(f"PROXY v2 version nibble is {head[12] >> 4}, not 2")
    if len(head) > 12 and head[12] & 0xF not in (0, 1):
        raise ProxyError(f"PROXY v2 command {head[12] & 0xF} is neither LOCAL (0) nor PROXY (1)")
    if len(head) < V2_FIXED:
        return None
    _, ver_cmd, fam, size = _V2_HEAD.unpack(head)
    total = V2_FIXED + size
    if total > limit:
        raise ProxyError(f"PROXY v2 header of {total} bytes is over the {limit}-byte limit")
    if len(data) < total:
        return None
    if ver_cmd & 0xF == 0:  # LOCAL: the balancer's own connection (health check)
        return Parsed(ProxyHeader(2, None, None), total)
    family, transport = _FAMILIES.get(fam >> 4), fam & 0xF
    if family is None or transport != 1:  # UNSPEC, unix sockets, UDP: no TCP client address
        return Parsed(ProxyHeader(2, None, None), total)
    need = _ADDR_LEN[family]
    if size < need:
        raise ProxyError(f"PROXY v2 header too short for IPv{family} addresses ({size} < {need} bytes)")
    n = 4 if family == 4 else 16
    body = data[V2_FIXED : V2_FIXED + need]
    src = str(ipaddress.ip_address(body[:n]))
    dst = str(ipaddress.ip_address(body[n : 2 * n]))
    sport, dport = struct.unpack_from("!HH", body, 2 * n)
    return Parsed(ProxyHeader(2, (src, sport), (dst, dport)), total)


# -- building headers (tests, benchmarks, a client behind nothing) ------------------------------


def header_v1(source: tuple[str, int] | None, dest: tuple[str, int] | None = None) -> bytes:
    """``PROXY TCP4 ...\\r\\n`` for ``source`` (``PROXY UNKNOWN\\r\\n`` when None)."""
    if source is None:
        return b"PROXY UNKNOWN\r\n"
    ip = ipaddress.ip_address(source[0])
    dest = dest or (("0.0.0.0" if ip.version == 4 else "::"), 0)
    family = "TCP4" if ip.version == 4 else "TCP6"
    return f"PROXY {family} {source[0]} {dest[0]} {source[1]} {dest[1]}\r\n".encode()


def header_v2(
    source: tuple[str, int] | None, dest: tuple[str, int] | None = None, tlvs: bytes = b""
) -> bytes:
    """A binary v2 header: PROXY for ``source`` over TCP, or LOCAL when ``source`` is None."""
    if source is None:
        return _V2_HEAD.pack(V2_SIGNATURE, 0x20, 0x00, len(tlvs)) + tlvs
    ip = ipaddress.ip_address(source[0])
    dest = dest or (("0.0.0.0" if ip.version == 4 else "::"), 0)
    dst = ipaddress.ip_address(dest[0])
    body = ip.packed + dst.packed + struct.pack("!HH", source[1], dest[1]) + tlvs
    fam = 0x11 if ip.version == 4 else 0x21
    return _V2_HEAD.pack(V2_SIGNATURE, 0x21, fam, len(body)) + body
