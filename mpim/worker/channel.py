"""One client connection: frame dispatch shared by the TCP and WebSocket adapters.

How this works: an adapter (``tcp.py`` or ``ws.py``) is an ``asyncio.Protocol`` or
picows listener that *is* the channel, so a connection costs one Python object
plus the transport. The adapter turns bytes into goim frames and calls
:meth:`Channel.on_frame`; outbound bytes go straight into the transport's own
buffer (no queue object, no task per connection). The transport buffer is the
bounded outbound queue: when it passes the high-water mark the transport pauses
us, and a channel that stays paused past ``slow_timeout`` or buffers more than
``max_pending_bytes`` is cut by the :class:`~mpim.worker.hub.Hub`.

``Channel`` holds behaviour only (empty ``__slots__`` at run time); each adapter
lists :data:`CHANNEL_SLOTS` in its own ``__slots__`` so that it can also derive
from the library's base class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from mpim.proto import Frame, Op, RemoteProtocolError, encode, encode_heartbeat_reply

if TYPE_CHECKING:
    from mpim.worker.hub import Hub
    from mpim.worker.room import Room

NEW, AUTHED, CLOSED = 0, 1, 2

CHANNEL_SLOTS = (
    "transport",
    "key",
    "mid",
    "room",
    "accepts",
    "expires",
    "wheel_slot",
    "state",
    "paused_at",
)


def parse_op_list(body: bytes) -> frozenset[int]:
    """A Sub/Unsub body: comma-separated int32 ops. Raises ValueError."""
    text = body.decode("ascii").strip()
    if not text:
        return frozenset()
    ops = frozenset(int(part) for part in text.split(","))
    if any(not -(1 << 31) <= op < (1 << 31) for op in ops):
        raise ValueError("op out of int32 range")
    return ops


class Channel:
    if not TYPE_CHECKING:
        __slots__ = ()

    hub: ClassVar[Hub]
    is_ws: ClassVar[bool]
    transport: Any
    key: str
    mid: int
    room: Room | None
    accepts: frozenset[int]
    expires: int
    wheel_slot: int
    state: int
    paused_at: float

    # -- implemented by the adapters ---------------------------------------------
    def send_frame(self, frame: bytes) -> None:
        """Send one encoded goim frame (WebSocket adapters wrap it in a message)."""
        raise NotImplementedError

    def close_transport(self) -> None:
        """Flush what is buffered, then close."""
        raise NotImplementedError

    def peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    # -- shared ----------------------------------------------------------------------
    def init_channel(self, transport: Any) -> None:
        self.transport = transport
        self.key = ""
        self.mid = 0
        self.room = None
        self.accepts = frozenset()
        self.expires = 0
        self.wheel_slot = -1
        self.state = NEW
        self.paused_at = 0.0
        self.hub.opened(self)

    def write(self, data: bytes) -> None:
        """Write bytes already encoded for this transport (shared by many channels)."""
        transport = self.transport
        transport.write(data)
        if self.paused_at and transport.get_write_buffer_size() > self.hub.max_pending:
            self.hub.cut_slow(self, "outbound buffer over the limit")

    def on_frame(self, frame: Frame) -> None:
        if self.state != AUTHED:
            if self.state == NEW and frame.op == Op.AUTH:
                self.hub.authenticate(self, frame)
            return
        op = frame.op
        if op == Op.HEARTBEAT:
            self.hub.heartbeat(self)
            room = self.room
            self.send_frame(encode_heartbeat_reply(room.online if room else 0, frame.ver, frame.seq))
        elif op == Op.CHANGE_ROOM:
            try:
                room_id = frame.body.decode("utf-8")
                self.hub.change_room(self, room_id)
            except (UnicodeDecodeError, ValueError) as exc:
                raise RemoteProtocolError(f"bad room id: {exc}") from None
            self.send_frame(encode(Op.CHANGE_ROOM_REPLY, frame.body, frame.ver, frame.seq))
        elif op in (Op.SUB, Op.UNSUB):
            self.watch(frame.body, add=op == Op.SUB)
            reply = Op.SUB_REPLY if op == Op.SUB else Op.UNSUB_REPLY
            self.send_frame(encode(reply, frame.body, frame.ver, frame.seq))
        else:
            self.hub.upstream(self, op, frame.body)
            self.send_frame(encode(op, b"", frame.ver, frame.seq))

    def watch(self, body: bytes, add: bool) -> None:
        """Sub/Unsub. A malformed list changes nothing (goim ignores it too)."""
        try:
            ops = parse_op_list(body)
        except (UnicodeDecodeError, ValueError):
            self.hub.log_bad_watch(self, body)
            return
        accepts = self.accepts | ops if add else self.accepts - ops
        self.accepts = self.hub.intern_accepts(accepts)
