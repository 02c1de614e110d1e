"""TCP adapter: a goim byte stream on an ``asyncio.Protocol`` that is the channel."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mpim.proto import RemoteProtocolError, decode
from mpim.worker.channel import CHANNEL_SLOTS, CLOSED, Channel

log = logging.getLogger("mpim.worker")


class TcpChannel(Channel, asyncio.Protocol):
    __slots__ = (*CHANNEL_SLOTS, "_tail")
    is_ws = False

    def connection_made(self, transport: Any) -> None:
        self._tail = b""
        high = self.sessions.cfg.channel.high_water
        if high:
            transport.set_write_buffer_limits(high=high)
        self.init_channel(transport)

    def data_received(self, data: bytes) -> None:
        if self.state == CLOSED:
            return
        self.registry.bytes_in += len(data)
        buf = self._tail + data if self._tail else data
        try:
            frames, self._tail = decode(buf, self.sessions.cfg.protocol.max_body)
            for frame in frames:
                self.on_frame(frame)
                if self.state == CLOSED:
                    return
        except RemoteProtocolError as exc:
            self.registry.reject(self, exc.reason)
        except Exception:  # a bug of ours: this connection goes, the worker and the others stay
            log.exception("error handling a frame from %s; closing it", self.peer())
            self.registry.reject(self, "internal error (logged)")

    def eof_received(self) -> bool:
        if self._tail and self.state != CLOSED:
            self.registry.reject(self, f"stream closed inside a frame ({len(self._tail)} bytes pending)")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._tail = b""
        self.registry.closed(self)
        self.transport = None

    def pause_writing(self) -> None:
        self.flow.pause(self)

    def resume_writing(self) -> None:
        self.flow.resume(self)

    def send_frame(self, frame: bytes) -> None:
        self.write(frame)

    def close_transport(self) -> None:
        self.transport.close()
