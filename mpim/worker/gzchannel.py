"""The go-zero endpoint's connection: a WebSocket channel speaking the go-zero chat server's JSON frames.

How this works: a :class:`~mpim.worker.ws.WsChannel` whose upgrade request named
``[gozero] path`` (and carried a valid token) becomes a :class:`GoZeroChannel`:
the same object and slots, another class (``__class__`` is swapped by
:meth:`mpim.worker.gzservice.GoZeroService.upgrade`), so goim connections pay
nothing for it. Inbound, each complete message is handed to the go-zero service
(decoded there; frames that come while the router files the session are held
like goim frames). Outbound, everything the rest of the worker writes is what it
writes for goim WebSocket clients - pushes as binary goim frames, replies as goim
frames - and this class writes them again as go-zero frames: pushes become data
frames with ``method`` "push" (:mod:`mpim.gozero.push`; one encoding per
message when a room or broadcast writes the same bytes to many), goim replies
(Auth reply, op 6, op 21) have no go-zero counterpart and are dropped. The
go-zero service writes its own frames with :meth:`GoZeroChannel.send_json`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from websockets.frames import CloseCode, Opcode
from websockets.protocol import State

from mpim.gozero.push import push_frames
from mpim.worker.channel import AUTHED, MAX_HELD, Channel
from mpim.worker.ws import WsChannel
from mpim.worker.wsframe import text_frame

if TYPE_CHECKING:
    from mpim.worker.gzservice import GoZeroService

log = logging.getLogger("mpim.worker")

CLOSE_WAIT = 2.0  # seconds a close of ours waits for the client's close frame


class _Memo:
    """The last message transcoded, by identity: a room flush or a broadcast writes the same bytes
    object to every member, so it is encoded once."""

    __slots__ = ("source", "text")

    def __init__(self) -> None:
        self.source: bytes | None = None
        self.text = b""


_memo = _Memo()


def transcode(message: bytes) -> bytes:
    """A WebSocket message built for goim clients -> the same pushes as go-zero text frames."""
    memo = _memo
    if message is memo.source:
        return memo.text
    try:
        frames = push_frames(message, int(time.time() * 1000))
    except (ValueError, IndexError) as exc:  # (our own bytes: a bug, not the client's)
        log.error("cannot write a push for a go-zero client: %s", exc)
        return b""
    text = b"".join(text_frame(frame) for frame in frames)
    memo.source, memo.text = message, text
    return text


class GoZeroChannel(WsChannel):
    __slots__ = ()
    is_gozero = True
    if TYPE_CHECKING:
        gozero: ClassVar[GoZeroService]

    def on_frame(self, frame: Any) -> None:
        """A decoded go-zero frame: held while the session is being filed, then dispatched."""
        held = self.held
        if held is not None:
            if len(held) >= MAX_HELD:
                self.gozero.bad(self, f"more than {MAX_HELD} frames sent while the session was being filed")
                return
            held.append(frame)
            return
        if self.state == AUTHED:
            self.gozero.dispatch(self, frame)

    def _deliver(self, opcode: Opcode, payload: bytes) -> None:
        self.gozero.receive(self, payload)

    def write(self, data: bytes) -> None:
        """A push as written for goim WebSocket clients: written again as go-zero frames."""
        text = transcode(data)
        if text:
            Channel.write(self, text)

    def _flush(self) -> None:
        """As a goim channel's, but a close we started waits for the client's close frame (or
        ``CLOSE_WAIT``): frames the client sent meanwhile are read, so the kernel does not reset the
        connection for unread data and drop what we wrote before the close (an error frame)."""
        ws, transport = self.ws, self.transport
        if ws is None or transport is None:
            return
        chunks = ws.data_to_send()
        if not transport.is_closing():
            for chunk in chunks:
                if chunk:
                    transport.write(chunk)
        if ws.close_expected() and (ws.eof_sent or ws.close_rcvd is not None):
            transport.close()

    def close_transport(self) -> None:
        ws, transport = self.ws, self.transport
        if ws is not None and ws.state is State.OPEN:
            ws.send_close(CloseCode.NORMAL_CLOSURE)
        self._flush()
        if transport is not None and not transport.is_closing():
            asyncio.get_running_loop().call_later(CLOSE_WAIT, transport.close)

    def send_frame(self, frame: bytes) -> None:
        """goim replies (Auth reply, op 6 before a close, op 21 after a resume): go-zero has none."""

    def send_json(self, payload: bytes) -> None:
        """One go-zero frame (JSON text) of the service's."""
        ws = self.ws
        if ws is not None and ws.state is State.OPEN:
            ws.send_text(payload)
            self._flush()
