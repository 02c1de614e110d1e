"""The link: one ordered byte stream between a worker and the router, carrying records.

How this works: the router listens on a unix socket in the run directory (or TCP
when ``[router] endpoint`` says ``tcp://host:port``); each worker connects once and
keeps the connection for its whole life, reconnecting when the router restarts.
Everything a worker tells the router (sessions, heartbeats, client messages) and
everything the router sends to one worker (unicast pushes, kicks, confirmations)
travels on it, so one worker's events stay in order and a dead peer is noticed at
once (EOF), not after a timeout.

A frame is a 4-byte big-endian length and a msgpack array of records
(:mod:`mpim.records`). :class:`FrameProtocol` batches what is sent during one loop
turn into one frame and one write, and splits what arrives back into frames.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from mpim.config import parse_address
from mpim.records import array

log = logging.getLogger("mpim.link")

_LEN = 4
MAX_FRAME = 64 << 20  # a frame this large is a broken peer


class FrameError(Exception):
    """The peer sent something that is not a frame stream."""


class FrameProtocol(asyncio.Protocol):
    """Length-prefixed frames over a stream transport. Subclasses implement :meth:`on_frame`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_buffer: int = 256 << 20) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._scheduled = False
        self._max_buffer = max_buffer
        self.closed = False
        self.frames_out = 0  # frames (writes) sent, and the records in them: batching, in numbers
        self.records_out = 0

    # -- sending -----------------------------------------------------------------------------
    def send(self, record: bytes) -> None:
        """Queue one encoded record; everything queued in this loop turn leaves as one frame."""
        if self.closed:
            return
        self._out.append(record)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        out, self._out = self._out, []
        transport = self.transport
        if not out or transport is None or self.closed:
            return
        payload = array(out)
        transport.write(len(payload).to_bytes(_LEN, "big") + payload)
        self.frames_out += 1
        self.records_out += len(out)
        if transport.get_write_buffer_size() > self._max_buffer:
            log.error("link peer is not reading (%d bytes queued); closing the link", self._max_buffer)
            self.abort()

    # -- receiving ---------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        try:
            while end - pos >= _LEN:
                size = int.from_bytes(buf[pos : pos + _LEN], "big")
                if size > MAX_FRAME:
                    raise FrameError(f"frame of {size} bytes is over the limit")
                stop = pos + _LEN + size
                if stop > end:
                    break
                self.on_frame(bytes(buf[pos + _LEN : stop]))
                pos = stop
                if self.closed:
                    return
        except FrameError as exc:
            log.error("link: %s; closing it", exc)
            self.abort()
            return
        if pos:
            del buf[:pos]

    def on_frame(self, payload: bytes) -> None:
        raise NotImplementedError

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._out = []
        self.transport = None

    def close(self) -> None:
        """Flush what is queued, then close."""
        if self.transport is not None and not self.closed:
            self.flush()
            self.transport.close()
        self.closed = True

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def _unix_path(endpoint: str) -> str | None:
    for prefix in ("ipc://", "unix://"):
        if endpoint.startswith(prefix):
            return endpoint[len(prefix) :]
    return None


async def serve(
    loop: asyncio.AbstractEventLoop, endpoint: str, factory: Any, backlog: int = 1024
) -> asyncio.AbstractServer:
    """Listen on ``ipc:///path`` (a unix socket, replacing a stale file) or ``tcp://host:port``."""
    path = _unix_path(endpoint)
    if path is not None:
        if os.path.exists(path):
            os.unlink(path)
        return await loop.create_unix_server(factory, path=path, backlog=backlog)
    if endpoint.startswith("tcp://"):
        host, port = parse_address(endpoint[len("tcp://") :].replace("*", "0.0.0.0"))
        return await loop.create_server(
            factory, host=host, port=port, backlog=backlog, reuse_address=True, family=socket.AF_INET
        )
    raise ValueError(f"{endpoint!r} is not an ipc:// or tcp:// endpoint")


async def connect(loop: asyncio.AbstractEventLoop, endpoint: str, factory: Any) -> Any:
    """Connect to :func:`serve`'s endpoint; returns the protocol (raises ``OSError``)."""
    path = _unix_path(endpoint)
    if path is not None:
        _, protocol = await loop.create_unix_connection(factory, path=path)
        return protocol
    if endpoint.startswith("tcp://"):
        host, port = parse_address(endpoint[len("tcp://") :])
        _, protocol = await loop.create_connection(factory, host=host, port=port)
        sock = protocol.transport.get_extra_info("socket") if protocol.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return protocol
    raise ValueError(f"{endpoint!r} is not an ipc:// or tcp:// endpoint")
