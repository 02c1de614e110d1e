"""One client connection: frame dispatch shared by the TCP and WebSocket adapters.

How this works: an adapter (``tcp.py`` or ``ws.py``) is an ``asyncio.Protocol``
that *is* the channel, so a connection costs one Python object plus the
transport. The adapter turns bytes into goim frames and calls
:meth:`Channel.on_frame`; outbound bytes go straight into the transport's own
buffer (no queue object, no task per connection). The transport buffer is the
bounded outbound queue: when it passes the high-water mark the transport pauses
us, and a channel that stays paused past ``slow_timeout`` or buffers more than
``max_pending_bytes`` is cut.

A connection moves NEW -> (Auth) -> REGISTERING -> (the router filed it and its
room's bus subscription is live) -> AUTHED -> CLOSED. Only then is the Auth
reply written, so a push accepted after the client holds its reply reaches it.
While a request waits for the router (registration, ChangeRoom) the channel
*holds* the frames that follow and stops reading, then replays them in order.

The channel depends on three narrow services, declared here as protocols and
bound as class attributes by the worker (no per-connection cost):
:class:`Registry` (open connections, closing), :class:`Flow` (deadlines and
slow consumers) and :class:`SessionService` (auth, rooms, watch sets, upstream).

``Channel`` holds behaviour only (empty ``__slots__`` at run time); each adapter
lists :data:`CHANNEL_SLOTS` in its own ``__slots__``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from mpim.config import Config
from mpim.limits import INT32, in_range
from mpim.listen import Origin, peer_ip, peer_name
from mpim.proto import Frame, Op, RemoteProtocolError, encode, encode_heartbeat_reply

if TYPE_CHECKING:
    from mpim.worker.room import Room

NEW, REGISTERING, AUTHED, CLOSED = 0, 1, 2, 3
RELIABLE_OPS = frozenset((Op.ACK, Op.RESUME, Op.CONFIRM))  # protocol ops for ack clients only
MAX_HELD = 64  # frames a client may send while a request of its waits for the router

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
    "held",
    "pending",
    "caps",
    "rel",
    "useq",
    "quota",
    "quota_bytes",
    "quota_at",
    "origin",
)


class Registry(Protocol):
    """The worker's open connections."""

    bytes_in: int  # every read's size is added here (a metric)

    def __iter__(self) -> Iterator[Channel]: ...
    def opened(self, channel: Channel) -> None: ...
    def closed(self, channel: Channel) -> None: ...
    def peer_closed(self, channel: Channel) -> None: ...
    def close(self, channel: Channel, *, abort: bool = False, notify: bool = False) -> None: ...
    def reject(self, channel: Channel, reason: str) -> None: ...


class Flow(Protocol):
    """Deadlines and back-pressure."""

    max_pending: int

    def pause(self, channel: Channel) -> None: ...
    def resume(self, channel: Channel) -> None: ...
    def cut_slow(self, channel: Channel, why: str) -> None: ...
    def untimed(self, channel: Channel) -> None: ...


class SessionService(Protocol):
    """Everything a client asks for after its first frame."""

    cfg: Config

    def authenticate(self, channel: Channel, frame: Frame) -> None: ...
    def admit(self, channel: Channel, frame: Frame) -> bool: ...
    def heartbeat(self, channel: Channel) -> None: ...
    def change_room(self, channel: Channel, frame: Frame) -> None: ...
    def watch(self, channel: Channel, frame: Frame) -> None: ...
    def reliable(self, channel: Channel, frame: Frame) -> None: ...
    def upstream(self, channel: Channel, frame: Frame) -> None: ...


class _AllOps(frozenset[int]):
    """The watch set of a client that takes every push op (the go-zero endpoint's)."""

    __slots__ = ()

    def __contains__(self, op: object) -> bool:
        return True


ALL_OPS: frozenset[int] = _AllOps()


def parse_op_list(body: bytes) -> frozenset[int]:
    """A Sub/Unsub body: comma-separated int32 ops. Raises ValueError."""
    text = body.decode("ascii").strip()
    if not text:
        return frozenset()
    ops = frozenset(int(part) for part in text.split(","))
    if any(not in_range(op, INT32) for op in ops):
        raise ValueError("op out of int32 range")
    return ops


class Channel:
    if not TYPE_CHECKING:
        __slots__ = ()

    registry: ClassVar[Registry]
    flow: ClassVar[Flow]
    sessions: ClassVar[SessionService]
    is_ws: ClassVar[bool]
    is_gozero: ClassVar[bool] = False  # a WebSocket connection on [gozero] path (mpim.worker.gzchannel)
    transport: Any
    key: str
    mid: int
    room: Room | None
    accepts: frozenset[int]
    expires: int
    wheel_slot: int
    state: int
    paused_at: float
    held: list[Any] | None  # goim frames (or the go-zero endpoint's) held while a request waits
    pending: Any
    caps: int  # mpim.worker.reliable.CAP_* bits the client asked for
    rel: Any  # an ack client's Reliable state (mpim.worker.reliable), else None
    useq: int  # seq cap: the last upstream frame seq; -1 = not checked
    quota: float  # upstream token buckets (frames, bytes) and when they were last filled
    quota_bytes: float
    quota_at: float
    origin: Origin | None  # the client's address when the transport's peer is not it (PROXY), or None

    def __init__(self, origin: Origin | None = None) -> None:
        self.origin = origin

    # -- implemented by the adapters ---------------------------------------------
    def send_frame(self, frame: bytes) -> None:
        """Send one encoded goim frame (WebSocket adapters wrap it in a message)."""
        raise NotImplementedError

    def close_transport(self) -> None:
        """Flush what is buffered, then close."""
        raise NotImplementedError

    def peer(self) -> str:
        origin = self.origin
        return str(origin) if origin is not None else peer_name(self.transport)

    def peer_ip(self) -> str:
        """The client's IP (from the PROXY header on a PROXY listener), for limits and the router."""
        origin = self.origin
        return origin.ip if origin is not None else peer_ip(self.transport)

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
        self.held = None
        self.pending = None
        self.caps = 0
        self.rel = None
        self.useq = -1
        self.quota = self.quota_bytes = self.quota_at = 0.0
        self.registry.opened(self)

    def write(self, data: bytes) -> None:
        """Write bytes already encoded for this transport (shared by many channels)."""
        transport = self.transport
        transport.write(data)
        if self.paused_at and transport.get_write_buffer_size() > self.flow.max_pending:
            self.flow.cut_slow(self, "outbound buffer over the limit")

    def hold(self) -> None:
        """A request of ours waits for the router: keep later frames, stop reading."""
        if self.held is None:
            self.held = []
            if self.transport is not None:
                self.transport.pause_reading()

    def release(self) -> None:
        """The request is answered: process the frames that arrived meanwhile, read again."""
        held, self.held = self.held, None
        if held is None or self.state == CLOSED:
            return
        for i, frame in enumerate(held):
            self.on_frame(frame)
            if self.state == CLOSED:
                return
            if self.held is not None:  # another request waits: keep the rest, in order
                self.held[:0] = held[i + 1 :]
                return
        if self.transport is not None:
            self.transport.resume_reading()

    def on_frame(self, frame: Frame) -> None:
        held = self.held
        if held is not None:
            if len(held) >= MAX_HELD:
                raise RemoteProtocolError(f"more than {MAX_HELD} frames sent while a request was pending")
            held.append(frame)
            return
        if self.state != AUTHED:
            if self.state == NEW and frame.op == Op.AUTH:
                self.sessions.authenticate(self, frame)
            return
        if not self.sessions.admit(self, frame):
            return
        op = frame.op
        if op == Op.HEARTBEAT:
            self.sessions.heartbeat(self)
            room = self.room
            self.send_frame(encode_heartbeat_reply(room.online if room else 0, frame.ver, frame.seq))
        elif op == Op.CHANGE_ROOM:
            self.sessions.change_room(self, frame)
        elif op in (Op.SUB, Op.UNSUB):
            self.sessions.watch(self, frame)
            reply = Op.SUB_REPLY if op == Op.SUB else Op.UNSUB_REPLY
            self.send_frame(encode(reply, frame.body, frame.ver, frame.seq))
        elif self.rel is not None and op in RELIABLE_OPS:
            self.sessions.reliable(self, frame)
        else:
            self.sessions.upstream(self, frame)  # (it answers: goim's echo, or an ack)
