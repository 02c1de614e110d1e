"""goim v2 wire protocol, sans-I/O.

A frame is a 16-byte big-endian header followed by the body::

    packLen int32 | headerLen int16 | ver int16 | op int32 | seq int32 | body

``packLen`` counts the header, ``headerLen`` is always 16. This module only
turns bytes into :class:`Frame` values and back; it never touches a socket, an
event loop or ZeroMQ, so every transport (TCP, WebSocket, the test clients and
the benchmark generator) shares the same codec.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

HEADER_SIZE = 16
DEFAULT_MAX_BODY = 4096

_HEADER = struct.Struct(">ihhii")
_ONLINE = struct.Struct(">i")
_unpack_header = _HEADER.unpack_from
_pack_header = _HEADER.pack


class Op(IntEnum):
    """Operation codes: 0-17 are goim v2's, 18-22 mpim's reliable delivery (README "Reliable
    delivery and chat"; 19 is unused). Business push ops (1000...) are the application's."""

    HANDSHAKE = 0
    HANDSHAKE_REPLY = 1
    HEARTBEAT = 2
    HEARTBEAT_REPLY = 3
    SEND_MSG = 4
    SEND_MSG_REPLY = 5
    DISCONNECT_REPLY = 6
    AUTH = 7
    AUTH_REPLY = 8
    RAW = 9
    PROTO_READY = 10
    PROTO_FINISH = 11
    CHANGE_ROOM = 12
    CHANGE_ROOM_REPLY = 13
    SUB = 14
    SUB_REPLY = 15
    UNSUB = 16
    UNSUB_REPLY = 17
    ACK = 18  # client -> server: header seq = the highest stream seq processed (cumulative)
    RESUME = 20  # client -> server: replay the stream after {"epoch", "seq"} (or the device cursor)
    RESUMED = 21  # server -> client: the resume's answer, after the replayed messages
    CONFIRM = 22  # client -> server (rigor): {"id"} of a message whose receipt it saw


class Frame(NamedTuple):
    """One decoded frame. Field order follows the header."""

    ver: int
    op: int
    seq: int
    body: bytes


class RemoteProtocolError(Exception):
    """The peer sent bytes that are not a valid goim stream; close the connection."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(op: int, body: bytes = b"", ver: int = 1, seq: int = 0) -> bytes:
    """Encode one frame."""
    return _pack_header(HEADER_SIZE + len(body), HEADER_SIZE, ver, op, seq) + body


def encode_header(op: int, body_len: int, ver: int = 1, seq: int = 0) -> bytes:
    """Encode only a header, for a body that is written separately."""
    return _pack_header(HEADER_SIZE + body_len, HEADER_SIZE, ver, op, seq)


def encode_heartbeat_reply(online: int, ver: int, seq: int) -> bytes:
    """Op 3 with the room's online count as a 4-byte big-endian int32 body."""
    online = min(online, 0x7FFFFFFF)
    return _pack_header(HEADER_SIZE + 4, HEADER_SIZE, ver, Op.HEARTBEAT_REPLY, seq) + _ONLINE.pack(online)


def decode_online(body: bytes) -> int:
    """Read the online count of a heartbeat reply body."""
    if len(body) != 4:
        raise RemoteProtocolError(f"heartbeat reply body is {len(body)} bytes, expected 4")
    return int(_ONLINE.unpack(body)[0])


def check_header(pack_len: int, header_len: int, max_body: int) -> None:
    """Raise :class:`RemoteProtocolError` if a header is not acceptable."""
    if header_len != HEADER_SIZE:
        raise RemoteProtocolError(f"headerLen {header_len} != {HEADER_SIZE}")
    if pack_len < HEADER_SIZE:
        raise RemoteProtocolError(f"packLen {pack_len} < {HEADER_SIZE}")
    if pack_len > HEADER_SIZE + max_body:
        raise RemoteProtocolError(f"packLen {pack_len} > {HEADER_SIZE} + max body {max_body}")


def decode(buf: bytes, max_body: int = DEFAULT_MAX_BODY) -> tuple[list[Frame], bytes]:
    """Split ``buf`` into whole frames and the unconsumed tail.

    A bad header is reported as soon as its 16 bytes are present, so the tail is
    always shorter than one maximal frame: a peer cannot make us buffer more
    than ``16 + max_body`` bytes.
    """
    frames: list[Frame] = []
    pos = 0
    end_of_buf = len(buf)
    limit = HEADER_SIZE + max_body
    while end_of_buf - pos >= HEADER_SIZE:
        pack_len, header_len, ver, op, seq = _unpack_header(buf, pos)
        if header_len != HEADER_SIZE or pack_len < HEADER_SIZE or pack_len > limit:
            check_header(pack_len, header_len, max_body)
        end = pos + pack_len
        if end > end_of_buf:
            break
        frames.append(Frame(ver, op, seq, buf[pos + HEADER_SIZE : end]))
        pos = end
    if pos == 0:
        return frames, buf
    return frames, buf[pos:]


def decode_message(message: bytes, max_body: int = DEFAULT_MAX_BODY) -> list[Frame]:
    """Decode one WebSocket message: one or more whole frames, nothing left over."""
    frames, tail = decode(message, max_body)
    if tail:
        raise RemoteProtocolError(f"message ends inside a frame ({len(tail)} bytes left over)")
    if not frames:
        raise RemoteProtocolError("empty message")
    return frames


class Decoder:
    """Incremental decoder for a byte stream split at arbitrary points."""

    __slots__ = ("_tail", "max_body")

    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.max_body = max_body
        self._tail = b""

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._tail)

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._tail + data if self._tail else data
        frames, self._tail = decode(buf, self.max_body)
        return frames

    def close(self) -> None:
        """The stream ended; a partial frame left in the buffer is an error."""
        if self._tail:
            size = len(self._tail)
            self._tail = b""
            raise RemoteProtocolError(f"stream closed inside a frame ({size} bytes pending)")
