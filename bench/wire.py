"""What the load generator puts on the wire and reads back, kept cheap per message.

Every pushed body starts with a fixed 20-byte prefix::

    stream uint32 | seq int64 | sent float64 (time.monotonic() of the publisher)

``stream`` is what the message is addressed to (a room index, a mid, or
:data:`BROADCAST`), ``seq`` counts from 0 per stream, and ``sent`` is read on the
same machine as the receiver (CLOCK_MONOTONIC is system-wide), so
``time.monotonic() - sent`` is the publish -> receive latency. The body may be
padded to any size after the prefix.

Client frames (auth, heartbeat) use :mod:`mpim.proto`. Server -> client
WebSocket frames are walked here by hand (see :func:`ws_frames`) because the
generator shares the two cores with the server and must stay far cheaper per
message than the server it measures; the handshake and every client frame go
through websockets' sans-I/O ``ClientProtocol``.
"""

from __future__ import annotations

import json
import struct

from mpim.proto import Op, encode

PUSH_OP = 1000
BROADCAST = 0xFFFFFFFF
PREFIX = struct.Struct(">Iqd")
PREFIX_SIZE = PREFIX.size

# goim header fields the generator needs: packLen and op; with the prefix of a push body.
HEAD = struct.Struct(">i4xi4x")
HEAD_AND_PREFIX = struct.Struct(">i4xi4xIqd")
HEAD_SIZE = HEAD.size
FULL_SIZE = HEAD_AND_PREFIX.size

HEARTBEAT = encode(Op.HEARTBEAT, b"", seq=2)


def body(stream: int, seq: int, sent: float, size: int = PREFIX_SIZE) -> bytes:
    """A push body of ``size`` bytes (at least the prefix)."""
    prefix = PREFIX.pack(stream, seq, sent)
    return prefix + b"." * (size - PREFIX_SIZE) if size > PREFIX_SIZE else prefix


def auth_frame(mid: int, room: str, accepts: tuple[int, ...] = (PUSH_OP,)) -> bytes:
    """goim's JSON token (``[auth] mode = "json"``)."""
    token = {"mid": mid, "key": "", "room_id": room, "platform": "bench", "accepts": list(accepts)}
    return encode(Op.AUTH, json.dumps(token, separators=(",", ":")).encode(), seq=1)


def room_name(index: int) -> str:
    return f"live://{index}"


class WsError(Exception):
    """The server sent a WebSocket frame the generator does not expect."""


def ws_frames(buf: bytes) -> tuple[list[tuple[int, int, int]], int]:
    """Whole server frames in ``buf``: ([(opcode, start, end)], bytes consumed).

    Server frames are unmasked; fragmented messages are not expected (mpim and
    Nchan send every message as one frame) and raise :class:`WsError`.
    """
    out: list[tuple[int, int, int]] = []
    pos = 0
    size = len(buf)
    while size - pos >= 2:
        b0 = buf[pos]
        length = buf[pos + 1]
        if length & 0x80:
            raise WsError("masked frame from the server")
        start = pos + 2
        if length == 126:
            if size - pos < 4:
                break
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            start = pos + 4
        elif length == 127:
            if size - pos < 10:
                break
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            start = pos + 10
        end = start + length
        if end > size:
            break
        if not b0 & 0x80:
            raise WsError("fragmented message")
        out.append((b0 & 0x0F, start, end))
        pos = end
    return out, pos
