"""goim frames on a raw TCP socket, written from the wire contract (ARCHITECTURE.md "Wire
protocol"), not from mpim's code: the raw client of the workload shares nothing with the SDK.

A frame is a 16-byte big-endian header ``packLen int32 | headerLen int16 (16) | ver int16 |
op int32 | seq int32`` and the body. Frames follow each other on the stream (a TCP batch is
inner frames back to back; an explicit op 9 frame holds inner frames in its body).
"""

from __future__ import annotations

import asyncio
import struct
from typing import NamedTuple

HEADER = struct.Struct(">ihhii")
RAW = 9


class Frame(NamedTuple):
    op: int
    seq: int
    body: bytes


class WireError(Exception):
    """The server sent bytes that are not goim frames."""


def frame(op: int, body: bytes = b"", seq: int = 0) -> bytes:
    return HEADER.pack(HEADER.size + len(body), HEADER.size, 1, op, seq) + body


def split(data: bytes) -> tuple[list[Frame], bytes]:
    """The whole frames at the front of ``data`` (op 9 bodies opened), and the rest."""
    frames: list[Frame] = []
    at = 0
    while len(data) - at >= HEADER.size:
        size, head, _ver, op, seq = HEADER.unpack_from(data, at)
        if head != HEADER.size or size < HEADER.size:
            raise WireError(f"bad header: packLen {size}, headerLen {head}")
        if len(data) - at < size:
            break
        body = data[at + HEADER.size : at + size]
        at += size
        if op == RAW:
            inner, rest = split(body)
            if rest:
                raise WireError("an op 9 batch ends inside a frame")
            frames += inner
        else:
            frames.append(Frame(op, seq, body))
    return frames, data[at:]


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""
        self.seq = 0

    @classmethod
    async def open(cls, port: int, timeout: float) -> RawConnection:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        return cls(reader, writer)

    def send(self, op: int, body: bytes = b"", seq: int | None = None) -> int:
        if seq is None:
            self.seq += 1
            seq = self.seq
        if self.writer.is_closing():  # uvloop raises RuntimeError for a write after the close
            raise ConnectionResetError("the connection is closed")
        self.writer.write(frame(op, body, seq))
        return seq

    async def read(self, timeout: float) -> list[Frame]:
        """The next frames ([] after ``timeout`` with nothing whole); EOFError when the server closed."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except TimeoutError:
            return []
        if not data:
            raise EOFError("the server closed the connection")
        frames, self.buffer = split(self.buffer + data)
        return frames

    def close(self) -> None:
        self.writer.transport.abort()
