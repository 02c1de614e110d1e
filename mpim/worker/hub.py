"""The worker's shared state: buckets, rooms, the deadline wheel and delivery.

One :class:`Hub` per worker process (uvicorn's ``ServerState``). Adapters call
into it for everything that crosses connections: authentication, room changes,
kicks, slow-consumer cuts, and the delivery API used by the bus (push to keys,
to a room, to everyone).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import secrets
from collections.abc import Iterator
from itertools import count
from typing import Any

from mpim.auth import Authenticator, AuthError, Identity, check_room_id
from mpim.config import Config
from mpim.proto import Frame, Op, encode
from mpim.worker.broadcast import Broadcaster
from mpim.worker.bucket import Buckets
from mpim.worker.channel import AUTHED, CLOSED, NEW, Channel
from mpim.worker.link import ClusterLink, StandaloneLink
from mpim.worker.room import RoomTable
from mpim.worker.wheel import TimingWheel, WheelItem
from mpim.worker.wsframe import binary_frame

log = logging.getLogger("mpim.worker")

_DISCONNECT = encode(Op.DISCONNECT_REPLY)
_FD_RESERVE = 64  # listeners, ZeroMQ, logs, pipes
_REFUSED_LOG_EVERY = 10.0


def connection_limit(cfg: Config) -> int:
    """``[server] max_connections``, or the open-file limit minus a reserve for everything else."""
    if cfg.server.max_connections:
        return cfg.server.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return max(1, soft - _FD_RESERVE)


def raise_open_file_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (nginx's worker_rlimit_nofile); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return int(soft)


def wheel_tick(cfg: Config) -> float:
    """Deadline resolution: an eighth of the shortest timeout, between 50 ms and 1 s."""
    shortest = min(cfg.protocol.handshake_timeout, cfg.heartbeat_timeout)
    return min(1.0, max(0.05, shortest / 8))


class Hub:
    def __init__(
        self,
        cfg: Config,
        loop: asyncio.AbstractEventLoop,
        link: ClusterLink | None = None,
    ) -> None:
        self.cfg = cfg
        self.loop = loop
        self.link: ClusterLink = link or StandaloneLink()
        self.auth = Authenticator(cfg.auth.mode, cfg.auth.secret)
        self.buckets = Buckets(cfg.room.buckets)
        self.rooms = RoomTable(
            loop, cfg.room.batch, cfg.room.batch_delay, self._room_opened, self._room_closed
        )
        self.wheel = TimingWheel(wheel_tick(cfg), self._expired)
        self.broadcaster = Broadcaster(self)
        self.paused: set[Channel] = set()
        self.max_pending = cfg.channel.max_pending_bytes
        self.max_connections = connection_limit(cfg)
        self._refused = 0
        self._refused_logged_at = -1e9
        self._accepts: dict[frozenset[int], frozenset[int]] = {}
        self._key_prefix = secrets.token_hex(6) + "-"
        self._key_seq = count(1)
        self._t0 = loop.time()
        self._tick_handle: asyncio.TimerHandle | None = None
        self.stats = {"auth_ok": 0, "auth_fail": 0, "kicked": 0, "slow_cut": 0, "bad_input": 0, "refused": 0}

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._t0 = self.loop.time()
        self._tick_handle = self.loop.call_later(self.wheel.tick, self._tick)

    def stop(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        self.broadcaster.stop()

    def reconfigure(self, cfg: Config) -> None:
        """Apply the settings that can change live (limits, batching, auth secret)."""
        self.cfg = cfg
        self.auth = Authenticator(cfg.auth.mode, cfg.auth.secret)
        self.max_pending = cfg.channel.max_pending_bytes
        self.max_connections = connection_limit(cfg)
        self.rooms.batch = cfg.room.batch
        self.rooms.batch_delay = cfg.room.batch_delay

    def channel_class(self, base: type[Any]) -> type[Any]:
        """A subclass of an adapter bound to this hub (a class attribute, no per-connection cost)."""
        return type(base.__name__, (base,), {"__slots__": (), "hub": self, "__module__": base.__module__})

    def __iter__(self) -> Iterator[Channel]:
        """Every open connection, authenticated or not."""
        return iter(self.wheel.items())  # type: ignore[arg-type]

    @property
    def connections(self) -> int:
        return len(self.wheel)

    @property
    def online(self) -> int:
        return len(self.buckets)

    def _tick(self) -> None:
        target = int((self.loop.time() - self._t0) / self.wheel.tick)
        while self.wheel.now < target:
            self.wheel.advance()
        if self.paused:
            limit = self.loop.time() - self.cfg.channel.slow_timeout
            for channel in [c for c in self.paused if c.paused_at < limit]:
                self.cut_slow(channel, f"paused over {self.cfg.channel.slow_timeout:g}s")
        self._tick_handle = self.loop.call_later(self.wheel.tick, self._tick)

    # -- connection events -----------------------------------------------------------
    def opened(self, channel: Channel) -> None:
        if len(self.wheel) >= self.max_connections:
            self._refuse(channel)
            return
        self.wheel.add(channel, self.cfg.protocol.handshake_timeout)

    def _refuse(self, channel: Channel) -> None:
        """Over ``max_connections``: close at once; one log line per 10 s at most."""
        channel.state = CLOSED
        channel.transport.abort()
        self._refused += 1
        self.stats["refused"] += 1
        now = self.loop.time()
        if now - self._refused_logged_at >= _REFUSED_LOG_EVERY:
            log.warning(
                "connection limit %d reached: refusing new connections (%d refused since the last report)",
                self.max_connections,
                self._refused,
            )
            self._refused_logged_at = now
            self._refused = 0

    def authenticate(self, channel: Channel, frame: Frame) -> None:
        try:
            ident = self.auth.verify(frame.body)
        except AuthError as exc:
            self.stats["auth_fail"] += 1
            log.warning("auth refused from %s: %s", channel.peer(), exc)
            self.close(channel)
            return
        self.stats["auth_ok"] += 1
        channel.key = ident.key or f"{self._key_prefix}{next(self._key_seq):x}"
        channel.mid = ident.mid
        channel.accepts = self.intern_accepts(ident.accepts)
        channel.state = AUTHED
        self.wheel.extend(channel, self.cfg.heartbeat_timeout)
        older = self.buckets.of(channel.key).put(channel.key, channel)
        if ident.room:
            channel.room = self.rooms.join(ident.room, channel)
        channel.send_frame(encode(Op.AUTH_REPLY, b"", frame.ver, frame.seq))
        self.link.connected(channel, ident if ident.key else _with_key(ident, channel.key))
        if older is not None:
            self.stats["kicked"] += 1
            log.info("key %s connected again from %s; kicking %s", channel.key, channel.peer(), older.peer())
            self.close(older, notify=True)

    def heartbeat(self, channel: Channel) -> None:
        self.wheel.extend(channel, self.cfg.heartbeat_timeout)
        self.link.heartbeat(channel)

    def change_room(self, channel: Channel, room_id: str) -> None:
        check_room_id(room_id)
        old = channel.room
        if old is not None and old.id == room_id:
            return
        if old is not None:
            self.rooms.leave(old, channel)
        channel.room = self.rooms.join(room_id, channel) if room_id else None
        self.link.room_changed(channel, old.id if old else "", room_id)

    def upstream(self, channel: Channel, op: int, body: bytes) -> None:
        self.link.upstream(channel, op, body)

    def intern_accepts(self, accepts: frozenset[int]) -> frozenset[int]:
        """Share one frozenset between all channels watching the same ops."""
        return self._accepts.setdefault(accepts, accepts)

    def log_bad_watch(self, channel: Channel, body: bytes) -> None:
        self.stats["bad_input"] += 1
        log.info("ignoring malformed op list %r from %s", body[:64], channel.peer())

    def reject(self, channel: Channel, reason: str) -> None:
        """The peer broke the protocol: log once and close cleanly."""
        if channel.state == CLOSED:
            return
        self.stats["bad_input"] += 1
        log.info("closing %s: %s", channel.peer(), reason)
        self.close(channel)

    def cut_slow(self, channel: Channel, why: str) -> None:
        if channel.state == CLOSED:
            return
        self.stats["slow_cut"] += 1
        size = channel.transport.get_write_buffer_size()
        log.warning(
            "slow consumer %s key=%s cut: %s (%d bytes queued)", channel.peer(), channel.key, why, size
        )
        self.close(channel, abort=True)

    def _expired(self, item: WheelItem) -> None:
        channel: Channel = item  # type: ignore[assignment]
        if channel.state == NEW:
            log.info("closing %s: no auth within %gs", channel.peer(), self.cfg.protocol.handshake_timeout)
        elif channel.state == AUTHED:
            log.info("closing %s key=%s: heartbeat timeout", channel.peer(), channel.key)
        self.close(channel)

    def close(self, channel: Channel, *, abort: bool = False, notify: bool = False) -> None:
        """Leave every table now, then close the transport (flushing unless ``abort``)."""
        if channel.state == CLOSED:
            return
        self._forget(channel)
        if notify:
            channel.send_frame(_DISCONNECT)
        if abort:
            channel.transport.abort()
        else:
            channel.close_transport()

    def closed(self, channel: Channel) -> None:
        """The transport is gone (adapter's ``connection_lost``)."""
        if channel.state != CLOSED:
            self._forget(channel)

    def _forget(self, channel: Channel) -> None:
        was_authed = channel.state == AUTHED
        channel.state = CLOSED
        self.wheel.remove(channel)
        self.paused.discard(channel)
        if not was_authed:
            return
        self.buckets.of(channel.key).remove(channel.key, channel)
        if channel.room is not None:
            self.rooms.leave(channel.room, channel)
            channel.room = None
        self.link.disconnected(channel)

    def pause(self, channel: Channel) -> None:
        channel.paused_at = self.loop.time()
        self.paused.add(channel)

    def resume(self, channel: Channel) -> None:
        channel.paused_at = 0.0
        self.paused.discard(channel)

    # -- delivery ----------------------------------------------------------------------
    def push_keys(self, keys: list[str], op: int, body: bytes) -> int:
        """Send to the connections with these keys that watch ``op``; returns how many."""
        frame = encode(op, body)
        ws_frame = b""
        sent = 0
        for key in keys:
            channel = self.buckets.get(key)
            if channel is None or op not in channel.accepts:
                continue
            if channel.is_ws:
                ws_frame = ws_frame or binary_frame(frame)
                channel.write(ws_frame)
            else:
                channel.write(frame)
            sent += 1
        return sent

    def push_room(self, room_id: str, op: int, body: bytes) -> bool:
        """Queue for every member of a room, watch set ignored; False if no member here."""
        return self.rooms.push(room_id, encode(op, body))

    def push_all(self, op: int, body: bytes, speed: int = 0) -> None:
        """Send to every connection watching ``op``, at most ``speed`` per second (0 = unpaced)."""
        self.broadcaster.submit(op, body, speed)

    def set_room_online(self, counts: dict[str, int]) -> None:
        self.rooms.set_cluster_online(counts)

    # -- drain -------------------------------------------------------------------------
    def drain(self) -> int:
        """Tell every client to go (op 6) after flushing queued room pushes; returns how many."""
        self.broadcaster.finish_now()
        self.rooms.flush_all()
        channels = list(self)
        for channel in channels:
            self.close(channel, notify=True)
        return len(channels)

    def _room_opened(self, room_id: str) -> None:
        self.link.room_opened(room_id)

    def _room_closed(self, room_id: str) -> None:
        self.link.room_closed(room_id)


def _with_key(ident: Identity, key: str) -> Identity:
    return Identity(ident.mid, key, ident.room, ident.platform, ident.accepts)
