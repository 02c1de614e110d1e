"""WebSocket adapter: goim frames in binary messages, on websockets' sans-I/O protocol.

How this works: :class:`WsChannel` is an ``asyncio.Protocol`` that owns a
``websockets.server.ServerProtocol``. The library parses the upgrade request and
every client frame, answers pings, enforces the message size limit and runs the
closing handshake; we only join fragments into messages. Each complete client
message is decoded as goim frames and handed to :meth:`Channel.on_frame`.
Replies go through the library. Pushes shared by many channels are pre-encoded
once (:mod:`mpim.worker.wsframe`) and written straight to the transport, which is
safe because whatever the library produces is flushed before we return.

``GET [websocket] path`` (``/sub``) is the goim endpoint; the optional
``[websocket] echo_path`` echoes messages for Autobahn conformance runs, and
``[gozero] path`` (off unless set) is the go-zero chat server's JSON endpoint: its
upgrade goes to :meth:`GoZeroUpgrades.upgrade`, which turns the channel into a
:class:`~mpim.worker.gzchannel.GoZeroChannel`.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import socket
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from mpim.proto import RemoteProtocolError, decode_message
from mpim.worker.channel import CHANNEL_SLOTS, CLOSED, Channel

if TYPE_CHECKING:
    from mpim.worker.hub import Hub

_UPGRADING, _GOIM, _ECHO, _FRESH, _GOZERO = 0, 1, 2, 3, 4  # _FRESH: upgrading, nothing received yet
_METHOD_START = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")  # an HTTP request starts with its method
_log = logging.getLogger("mpim.worker")
_wslog = logging.getLogger("websockets.server")
_wslog.setLevel(logging.WARNING)  # the library logs every open and close at INFO


class _Message:
    """A fragmented message being joined; text is checked as it arrives (echo only)."""

    __slots__ = ("opcode", "parts", "utf8")

    def __init__(self, opcode: Opcode, check_utf8: bool) -> None:
        self.opcode = opcode
        self.parts: list[bytes] = []
        self.utf8 = codecs.getincrementaldecoder("utf-8")() if check_utf8 and opcode is Opcode.TEXT else None

    def add(self, data: bytes, final: bool) -> None:
        self.parts.append(data)
        if self.utf8 is not None:
            self.utf8.decode(data, final)  # raises UnicodeDecodeError


class GoZeroUpgrades(Protocol):
    """The go-zero endpoint's service, as the WebSocket adapter sees it."""

    def upgrade(self, channel: WsChannel, ws: ServerProtocol, request: Request) -> bool: ...
    def receive(self, channel: WsChannel, payload: bytes) -> None: ...


class WsChannel(Channel, asyncio.Protocol):
    __slots__ = (*CHANNEL_SLOTS, "ws", "_mode", "_message", "_head_tail")
    is_ws = True
    gozero: ClassVar[GoZeroUpgrades]

    def connection_made(self, transport: Any) -> None:
        cfg = self.sessions.cfg
        self.ws: ServerProtocol | None = ServerProtocol(max_size=cfg.websocket.max_message, logger=_wslog)
        self._mode = _FRESH
        self._message: _Message | None = None
        self._head_tail = b""
        if cfg.channel.high_water:
            transport.set_write_buffer_limits(high=cfg.channel.high_water)
        self.init_channel(transport)

    # -- inbound ---------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        ws = self.ws
        if ws is None:
            return
        self.registry.bytes_in += len(data)
        if self._mode == _FRESH:
            # Cannot be an HTTP request (a goim TCP client, TLS): refuse now, not at the handshake timeout.
            if data[0] not in _METHOD_START:
                ws.send_response(ws.reject(400, "Bad Request: this is a WebSocket port\n"))
                self.registry.reject(
                    self, f"not an HTTP request (first byte 0x{data[0]:02x}) on the WebSocket port"
                )
                return
            self._mode = _UPGRADING
        if ws.state is State.CONNECTING:
            # The library parses frames right after the request, before we have answered it
            # (a pong, or a close, would go out ahead of the 101). Feed the request alone first.
            probe = self._head_tail + data
            end = probe.find(b"\r\n\r\n")
            if end < 0:
                self._head_tail = probe[-3:]
            else:
                split = end + 4 - len(self._head_tail)
                self._head_tail = b""
                if split < len(data):
                    self._receive(ws, data[:split])
                    if self.ws is None or self._mode == _UPGRADING:
                        return  # refused: the rest is not looked at
                    data = data[split:]
        self._receive(ws, data)

    def _receive(self, ws: ServerProtocol, data: bytes) -> None:
        ws.receive_data(data)
        try:
            for event in ws.events_received():
                if isinstance(event, Request):
                    self._upgrade(ws, event)
                elif not isinstance(event, Frame):
                    continue
                elif event.opcode is Opcode.CLOSE:
                    if self._mode in (_GOIM, _GOZERO):
                        self.registry.peer_closed(self)
                elif event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                    self._data_frame(event)
                if self.state == CLOSED and self._mode != _ECHO:
                    break
        except RemoteProtocolError as exc:
            self.registry.reject(self, exc.reason)
        except UnicodeDecodeError as exc:
            ws.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
        except Exception:  # a bug of ours: this connection goes, the worker and the others stay
            _log.exception("error handling a frame from %s; closing it", self.peer())
            self.registry.reject(self, "internal error (logged)")
        if self.state != CLOSED and self._mode != _ECHO:
            if ws.handshake_exc is not None:
                self.registry.reject(self, f"websocket handshake failed: {ws.handshake_exc}")
            elif ws.parser_exc is not None:
                self.registry.reject(self, f"websocket: {ws.parser_exc}")
        self._flush()

    def _upgrade(self, ws: ServerProtocol, request: Request) -> None:
        cfg = self.sessions.cfg.websocket
        path = request.path.partition("?")[0]
        gozero = self.sessions.cfg.gozero.path
        if path == cfg.path:
            mode = _GOIM
        elif cfg.echo_path and path == cfg.echo_path:
            mode = _ECHO
        elif gozero and path == gozero:
            if self.gozero.upgrade(self, ws, request):
                self._mode = _GOZERO
            return
        else:
            ws.send_response(ws.reject(404, "Not Found\n"))
            self.registry.reject(self, f"websocket upgrade for unknown path {path[:64]!r}")
            return
        ws.send_response(ws.accept(request))
        if ws.state is not State.OPEN:
            self.registry.reject(self, f"websocket handshake failed: {ws.handshake_exc}")
            return
        self._mode = mode
        if mode == _ECHO:
            self.flow.untimed(self)  # a conformance endpoint: no goim session, no deadline

    def _data_frame(self, frame: Frame) -> None:
        message = self._message
        if message is None:
            if frame.fin:
                self._deliver(frame.opcode, bytes(frame.data))
                return
            message = self._message = _Message(frame.opcode, self._mode == _ECHO)
        message.add(bytes(frame.data), frame.fin)
        if frame.fin:
            self._message = None
            self._deliver(message.opcode, b"".join(message.parts))

    def _deliver(self, opcode: Opcode, payload: bytes) -> None:
        if self._mode == _GOIM:
            for goim_frame in decode_message(payload, self.sessions.cfg.protocol.max_body):
                self.on_frame(goim_frame)
                if self.state == CLOSED:
                    return
        elif self._mode == _ECHO and self.ws is not None and self.ws.state is State.OPEN:
            if opcode is Opcode.TEXT:
                payload.decode("utf-8")  # raises UnicodeDecodeError -> close 1007
                self.ws.send_text(payload)
            else:
                self.ws.send_binary(payload)

    # -- outbound -----------------------------------------------------------------------
    def _flush(self) -> None:
        ws, transport = self.ws, self.transport
        if ws is None or transport is None:
            return
        chunks = ws.data_to_send()
        if not transport.is_closing():
            for chunk in chunks:
                if chunk:
                    transport.write(chunk)
        if ws.close_expected():
            transport.close()

    def send_frame(self, frame: bytes) -> None:
        ws = self.ws
        if ws is not None and ws.state is State.OPEN:
            ws.send_binary(frame)
            self._flush()

    def close_transport(self) -> None:
        ws = self.ws
        if ws is not None and ws.state is State.OPEN:
            ws.send_close(CloseCode.NORMAL_CLOSURE)
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool:
        if self.ws is not None:
            self.ws.receive_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.closed(self)
        self.ws = None
        self._message = None
        self.transport = None

    def pause_writing(self) -> None:
        self.flow.pause(self)

    def resume_writing(self) -> None:
        self.flow.resume(self)


async def start_ws_server(hub: Hub, sock: socket.socket, backlog: int = 4096) -> asyncio.AbstractServer:
    # create_server listens again: without backlog= it would drop to asyncio's default of 100
    return await hub.loop.create_server(hub.channel_class(WsChannel), sock=sock, backlog=backlog)
