"""Client connections of the load generator: goim over TCP and WebSocket, and Nchan.

Each connection is one ``asyncio.Protocol`` object with ``__slots__``: no task,
no queue. It follows one *stream* (its room index, or its mid for unicast) and
checks that stream's sequence numbers: the next expected seq is one int; a gap
records the missing seqs in a set, so a late arrival counts as reordered, a
repeat as a duplicate, and whatever is still missing at the end as lost.
Latency is recorded for every delivery with one clock read per socket read.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame
from websockets.http11 import Response
from websockets.uri import parse_uri

from bench.tally import CAP, RESOLUTION, Tally
from bench.wire import (
    BROADCAST,
    FULL_SIZE,
    HEAD,
    HEAD_AND_PREFIX,
    HEAD_SIZE,
    PREFIX,
    PREFIX_SIZE,
    PUSH_OP,
    auth_frame,
    ws_frames,
)
from mpim.proto import Op

_monotonic = time.monotonic
_RAW = int(Op.RAW)
_AUTH_REPLY = int(Op.AUTH_REPLY)
_HEARTBEAT_REPLY = int(Op.HEARTBEAT_REPLY)
_DISCONNECT = int(Op.DISCONNECT_REPLY)
_MAX_MISSING = 1_000_000


class Client(asyncio.Protocol):
    """Sequence checking and goim frame walking shared by every kind of client."""

    __slots__ = ("buf", "missing", "next", "ready", "room", "stream", "tally", "transport")

    def __init__(self, tally: Tally, stream: int, room: str, ready: asyncio.Future[None]) -> None:
        self.tally = tally
        self.stream = stream
        self.room = room
        self.ready = ready
        self.next = 0
        self.missing: set[int] | None = None
        self.buf = b""
        self.transport: Any = None

    # -- accounting ------------------------------------------------------------------
    def irregular(self, seq: int) -> None:
        """``seq`` is not the next expected one: a gap, a late arrival or a repeat."""
        expected = self.next
        if seq > expected:
            if self.missing is None:
                self.missing = set()
            if len(self.missing) < _MAX_MISSING:
                self.missing.update(range(expected, seq))
            self.tally.gaps += seq - expected
            self.next = seq + 1
        elif self.missing is not None and seq in self.missing:
            self.missing.discard(seq)
            self.tally.reorder += 1
        else:
            self.tally.dup += 1

    def lost(self, sent: int) -> int:
        """Messages of this stream never received, given how many were published."""
        return (len(self.missing) if self.missing else 0) + max(0, sent - self.next)

    def walk(self, buf: bytes, pos: int, end: int, now: float) -> int:
        """Account the goim frames in ``buf[pos:end]``; returns where an incomplete frame starts."""
        tally = self.tally
        hist = tally.hist
        stream = self.stream
        count = 0
        while end - pos >= HEAD_SIZE:
            if end - pos >= FULL_SIZE:
                size, op, target, seq, sent = HEAD_AND_PREFIX.unpack_from(buf, pos)
            else:
                size, op = HEAD.unpack_from(buf, pos)
                target = seq = -1
                sent = now
            if op == _RAW:  # a WebSocket batch: step into the outer header
                pos += HEAD_SIZE
                continue
            if pos + size > end:
                break
            if op == PUSH_OP and size >= FULL_SIZE:
                count += 1
                if target == stream:
                    if seq == self.next:
                        self.next = seq + 1
                    else:
                        self.irregular(seq)
                    i = int((now - sent) * RESOLUTION)
                    hist[i if i < CAP else CAP] += 1
                elif target == BROADCAST:
                    tally.broadcast(seq, now)
                else:
                    tally.misdelivered += 1
            else:
                self.control(op)
            pos += size
        tally.recv += count
        return pos

    def control(self, op: int) -> None:
        if op == _AUTH_REPLY:
            if not self.ready.done():
                self.ready.set_result(None)
        elif op == _HEARTBEAT_REPLY:
            self.tally.hb_replies += 1
        elif op == _DISCONNECT:
            self.tally.kicked += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.tally.closed += 1
        self.transport = None
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before it was ready"))

    def send_frame(self, frame: bytes) -> None:
        raise NotImplementedError


class TcpClient(Client):
    __slots__ = ("mid",)

    def __init__(self, tally: Tally, stream: int, room: str, ready: asyncio.Future[None], mid: int) -> None:
        super().__init__(tally, stream, room, ready)
        self.mid = mid

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(auth_frame(self.mid, self.room))

    def data_received(self, data: bytes) -> None:
        self.tally.bytes += len(data)
        buf = self.buf + data if self.buf else data
        pos = self.walk(buf, 0, len(buf), _monotonic())
        self.buf = buf[pos:] if pos < len(buf) else b""

    def send_frame(self, frame: bytes) -> None:
        if self.transport is not None:
            self.transport.write(frame)


class WsClient(Client):
    """WebSocket: the library does the handshake and masks our frames; we walk the server's."""

    __slots__ = ("mid", "upgraded", "ws")

    def __init__(
        self, tally: Tally, stream: int, room: str, ready: asyncio.Future[None], mid: int, url: str
    ) -> None:
        super().__init__(tally, stream, room, ready)
        self.mid = mid
        self.upgraded = False
        self.ws = ClientProtocol(parse_uri(url))

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self.flush()

    def flush(self) -> None:
        if self.transport is not None:
            for chunk in self.ws.data_to_send():
                if chunk:
                    self.transport.write(chunk)

    def handshake(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Response):
                if event.status_code != 101:
                    self.transport.close()
                    return
                self.upgraded = True
                self.opened()
            elif isinstance(event, Frame):  # in the same read as the 101 (mpim and Nchan send none)
                self.message(bytes(event.data), 0, len(event.data), _monotonic())
        self.flush()

    def opened(self) -> None:
        self.ws.send_binary(auth_frame(self.mid, self.room))

    def data_received(self, data: bytes) -> None:
        self.tally.bytes += len(data)
        if not self.upgraded:
            self.handshake(data)
            return
        buf = self.buf + data if self.buf else data
        frames, used = ws_frames(buf)
        now = _monotonic()
        for opcode, start, end in frames:
            if opcode in (1, 2):
                self.message(buf, start, end, now)
            elif opcode == 8:
                self.transport.close()
            elif opcode == 9:
                self.ws.send_pong(buf[start:end])
                self.flush()
        self.buf = buf[used:] if used < len(buf) else b""

    def message(self, buf: bytes, start: int, end: int, now: float) -> None:
        self.walk(buf, start, end, now)

    def send_frame(self, frame: bytes) -> None:
        if self.transport is not None:
            self.ws.send_binary(frame)
            self.flush()


class NchanClient(WsClient):
    """An Nchan WebSocket subscriber: each message is the push body itself."""

    __slots__ = ()

    def opened(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def message(self, buf: bytes, start: int, end: int, now: float) -> None:
        if end - start < PREFIX_SIZE:
            return
        target, seq, sent = PREFIX.unpack_from(buf, start)
        tally = self.tally
        tally.recv += 1
        if target == self.stream:
            if seq == self.next:
                self.next = seq + 1
            else:
                self.irregular(seq)
            i = int((now - sent) * RESOLUTION)
            tally.hist[i if i < CAP else CAP] += 1
        else:
            tally.misdelivered += 1
