"""Sessions: authentication, the key registry (buckets), rooms per client, kicks, upstream.

Auth is a request to the router: the token is verified here, the client's room
is opened (subscribed on the bus) and the session is sent to the router; only
when the router confirms (its tables hold the key and mid, and the room's bus
subscription is live) does the client enter the buckets and its room and get
the Auth reply. ChangeRoom works the same way. A key that is confirmed again
here kicks the older connection with that key (the router kicks one elsewhere).
The go-zero endpoint authenticates at its WebSocket upgrade and files its
clients through :meth:`Sessions.login` the same way (no Auth frame, no reply).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from itertools import count
from typing import TYPE_CHECKING

from mpim.auth import Authenticator, AuthError, Identity
from mpim.limits import check_room_id
from mpim.proto import Frame, Op, RemoteProtocolError, encode
from mpim.records import Entry
from mpim.worker.channel import ALL_OPS, AUTHED, CLOSED, REGISTERING, Channel, parse_op_list
from mpim.worker.reliable import CAP_ACK, Reliable, caps_bits

if TYPE_CHECKING:
    from mpim.config import Config
    from mpim.worker.bucket import Buckets
    from mpim.worker.channel import Registry
    from mpim.worker.deadlines import Deadlines
    from mpim.worker.link import ClusterLink
    from mpim.worker.ratelimit import RateLimits
    from mpim.worker.reliable import ReliableDelivery
    from mpim.worker.room import Room, RoomTable
    from mpim.worker.upstream import UpstreamService

log = logging.getLogger("mpim.worker")


class Pending:
    """A request of one channel that waits for the router: its reply and the room it reserved."""

    __slots__ = ("reply", "room", "seq", "then")

    def __init__(
        self, reply: bytes, room: Room | None, seq: int = 0, then: Callable[[], None] | None = None
    ) -> None:
        self.reply = reply  # the goim frame to write once confirmed (b"": none)
        self.room = room
        self.seq = seq  # the request frame's header seq (where a seq client's numbering starts)
        self.then = then  # called once confirmed, after the reply


class Sessions:
    """Implements :class:`~mpim.worker.channel.SessionService` and the link's session side."""

    def __init__(
        self,
        cfg: Config,
        registry: Registry,
        deadlines: Deadlines,
        buckets: Buckets,
        rooms: RoomTable,
        link: ClusterLink,
        stats: dict[str, int],
        reliable_delivery: ReliableDelivery,
        upstream_service: UpstreamService,
        rate_limits: RateLimits,
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.deadlines = deadlines
        self.buckets = buckets
        self.rooms = rooms
        self.link = link
        self.stats = stats
        self.delivery = reliable_delivery
        self.messages = upstream_service
        self.limits = rate_limits
        self.auth = Authenticator.from_config(cfg.auth)
        self._accepts: dict[frozenset[int], frozenset[int]] = {}
        self._key_prefix = secrets.token_hex(6) + "-"
        self._key_seq = count(1)
        self.registering: dict[str, Channel] = {}  # key -> its connection waiting for the router
        self.on_auth_failed: Callable[[Channel], None] = lambda channel: None  # per-IP failure count

    def reconfigure(self, cfg: Config) -> None:
        self.cfg = cfg
        self.auth = Authenticator.from_config(cfg.auth)

    @property
    def online(self) -> int:
        """Authenticated connections."""
        return len(self.buckets)

    # -- auth ---------------------------------------------------------------------------
    def authenticate(self, channel: Channel, frame: Frame) -> None:
        try:
            ident = self.auth.verify(frame.body)
        except AuthError as exc:
            self.refused(channel, str(exc))
            self.registry.close(channel)
            return
        self.login(channel, ident, encode(Op.AUTH_REPLY, b"", frame.ver, frame.seq), frame.seq)

    def refused(self, channel: Channel, why: str, where: str = "") -> None:
        """A token was refused: counted, logged, held against the client's IP (the caller closes)."""
        self.stats["auth_fail"] += 1
        log.warning("auth refused from %s%s: %s", channel.peer(), where, why)
        self.on_auth_failed(channel)

    def login(
        self,
        channel: Channel,
        ident: Identity,
        reply: bytes,
        seq: int = 0,
        then: Callable[[], None] | None = None,
    ) -> None:
        """An authenticated client: filed with the router; once it confirms, ``reply`` is written
        and ``then()`` called (frames that arrive meanwhile are held)."""
        self.stats["auth_ok"] += 1
        channel.key = ident.key or f"{self._key_prefix}{next(self._key_seq):x}"
        channel.mid = ident.mid
        channel.accepts = self.intern_accepts(ident.accepts)
        channel.caps = caps_bits(ident.caps)
        if channel.caps & CAP_ACK:
            channel.rel = Reliable()
        channel.state = REGISTERING
        self.registering[channel.key] = channel
        room = self.rooms.reserve(ident.room) if ident.room else None
        channel.pending = Pending(reply, room, seq, then)
        channel.hold()
        self.link.register(channel, ident.room, channel.peer_ip())

    def confirmed(self, channel: Channel) -> None:
        """The router filed this channel's request (auth or room change): apply it and answer."""
        pending = channel.pending
        if channel.state == CLOSED or not isinstance(pending, Pending):
            return
        channel.pending = None
        room = pending.room
        if channel.state == REGISTERING:
            self._registered(channel)
            channel.state = AUTHED
            self.deadlines.beat(channel)
            self.messages.start(channel, pending.seq)
            older = self.buckets.of(channel.key).put(channel.key, channel)
            if older is not None:
                self.stats["kicked"] += 1
                log.info(
                    "key %s connected again from %s; kicking %s", channel.key, channel.peer(), older.peer()
                )
                self.registry.close(older, notify=True)
        if room is not None:
            channel.room = self.rooms.join(room.id, channel)
            self.rooms.unreserve(room)
        if pending.reply:
            channel.send_frame(pending.reply)
        if pending.then is not None:
            pending.then()
        channel.release()

    def denied(self, channel: Channel, reason: str) -> None:
        """The router refused the registration (a key held by another user): close, like a bad token."""
        if channel.state == CLOSED:
            return
        self.stats["auth_denied"] += 1
        log.warning("auth denied for %s key=%s mid=%d: %s", channel.peer(), channel.key, channel.mid, reason)
        self.on_auth_failed(channel)
        self.registry.close(channel)

    def heartbeat(self, channel: Channel) -> None:
        self.deadlines.beat(channel)
        self.link.heartbeat(channel)

    # -- rooms and watch sets --------------------------------------------------------------
    def change_room(self, channel: Channel, frame: Frame) -> None:
        try:
            room_id = check_room_id(frame.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise RemoteProtocolError(f"bad room id: {exc}") from None
        reply = encode(Op.CHANGE_ROOM_REPLY, frame.body, frame.ver, frame.seq)
        old = channel.room
        if (old is not None and old.id == room_id) or (old is None and not room_id):
            channel.send_frame(reply)
            return
        if old is not None:
            self.rooms.leave(old, channel)
            channel.room = None
        room = self.rooms.reserve(room_id) if room_id else None
        channel.pending = Pending(reply, room)
        channel.hold()
        self.link.change_room(channel, room_id)

    def intern_accepts(self, accepts: frozenset[int]) -> frozenset[int]:
        """Share one frozenset between all channels watching the same ops."""
        if accepts is ALL_OPS:
            return accepts
        return self._accepts.setdefault(accepts, accepts)

    def watch(self, channel: Channel, frame: Frame) -> None:
        """Sub/Unsub. A malformed list changes nothing (goim ignores it too)."""
        try:
            ops = parse_op_list(frame.body)
        except (UnicodeDecodeError, ValueError):
            self.stats["bad_input"] += 1
            log.info("ignoring malformed op list %r from %s", frame.body[:64], channel.peer())
            return
        accepts = channel.accepts | ops if frame.op == Op.SUB else channel.accepts - ops
        channel.accepts = self.intern_accepts(accepts)

    def admit(self, channel: Channel, frame: Frame) -> bool:
        if frame.op == Op.ACK and channel.rel is not None:  # (acks: a bucket of their own)
            return self.limits.take_ack(channel)
        return self.messages.admit(channel, frame)

    def upstream(self, channel: Channel, frame: Frame) -> None:
        self.messages.message(channel, frame)

    def reliable(self, channel: Channel, frame: Frame) -> None:
        """Ops 18 (ack), 20 (resume) and 22 (confirm) of an ack client."""
        if frame.op == Op.ACK:
            if frame.body:
                raise RemoteProtocolError(f"ack (op 18) must have an empty body, got {len(frame.body)} bytes")
            self.delivery.ack(channel, frame.seq)
        elif frame.op == Op.RESUME:
            self.delivery.resume(channel, frame)
        elif frame.op == Op.CONFIRM:
            self.messages.confirm(channel, frame)

    # -- the link's side ----------------------------------------------------------------------
    def lost(self, channel: Channel, why: str) -> None:
        """Something this client waited for cannot come: tell it op 6, it reconnects."""
        log.info("closing %s key=%s: %s", channel.peer(), channel.key, why)
        self.registry.close(channel, notify=True)

    def _registered(self, channel: Channel) -> None:
        if self.registering.get(channel.key) is channel:
            del self.registering[channel.key]

    def kick(self, keys: list[str]) -> None:
        """The key connected elsewhere (another worker or host): close it here, also while its
        own registration is still on its way (the kick may overtake it)."""
        for key in keys:
            channel = self.buckets.get(key) or self.registering.get(key)
            if channel is not None:
                self.stats["kicked"] += 1
                log.info("key %s connected on another worker; kicking %s", key, channel.peer())
                self.registry.close(channel, notify=True)

    def entries(self) -> list[Entry]:
        """Every session, confirmed or being registered, for a full report to the router."""
        entries = []
        for ch in self.registry:
            if ch.state == AUTHED:
                room = ch.room.id if ch.room is not None else ""
            elif ch.state == REGISTERING:
                pending = ch.pending
                room = pending.room.id if isinstance(pending, Pending) and pending.room is not None else ""
            else:
                continue
            entries.append(Entry(ch.key, ch.mid, room, ch.peer_ip()))
        return entries

    def forget(self, channel: Channel) -> None:
        """A closing channel leaves the buckets, its room, and any request it had pending."""
        if channel.state == REGISTERING:
            self._registered(channel)
        if channel.rel is not None:
            self.delivery.forget(channel)
        self.messages.forget(channel)
        pending = channel.pending
        if isinstance(pending, Pending):
            channel.pending = None
            if pending.room is not None:
                self.rooms.unreserve(pending.room)
            self.link.cancel(channel)
            if channel.state == REGISTERING and self.buckets.get(channel.key) is None:
                self.link.disconnected(channel)  # the router may have filed it already
        if channel.state == AUTHED:
            if channel.room is not None:
                self.rooms.leave(channel.room, channel)
                channel.room = None
            if self.buckets.of(channel.key).remove(channel.key, channel):
                self.link.disconnected(channel)  # (unless a newer connection took the key here)
