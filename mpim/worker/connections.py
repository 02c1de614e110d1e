"""The worker's open connections: the registry, the connection limit, and closing.

Every connection (authenticated or not, goim or the echo endpoint) is in
:class:`Connections` from ``connection_made`` until it is closed, so the count and
the drain see all of them. Closing goes through one place: the other pieces
(deadlines, sessions) register ``forget`` hooks that take a closing channel out
of their own tables before the transport is closed.

Every new connection is also asked of the per-IP limits (:mod:`mpim.worker.iplimits`)
by its client address, unless a TLS or PROXY listener already did before the
handshake (the channel's ``origin`` says so); one that was counted is released
when it closes.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from mpim.proto import Op, encode
from mpim.worker.channel import AUTHED, CLOSED
from mpim.worker.iplimits import IpLimits

if TYPE_CHECKING:
    import asyncio

    from mpim.config import Config
    from mpim.worker.channel import Channel

log = logging.getLogger("mpim.worker")

_DISCONNECT = encode(Op.DISCONNECT_REPLY)
_FD_RESERVE = 64  # listeners, ZeroMQ, the link, logs, pipes
_REFUSED_LOG_EVERY = 10.0
_SWEEP_EVERY = 2.0


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


class Connections:
    """Implements :class:`~mpim.worker.channel.Registry`."""

    def __init__(self, cfg: Config, loop: asyncio.AbstractEventLoop, stats: dict[str, int]) -> None:
        self.loop = loop
        self.stats = stats
        self.bytes_in = 0  # bytes read from clients (the adapters add each read)
        self.max_connections = connection_limit(cfg)
        self.limits = IpLimits(cfg.limits, loop.time, stats)
        self._open: set[Channel] = set()
        self._forget: list[Callable[[Channel], None]] = []
        self._on_open: list[Callable[[Channel], None]] = []
        self._refused = 0
        self._refused_logged_at = -1e9
        self._sweep: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Sweep the per-IP table now and then (it keeps only active addresses)."""
        self._sweep = self.loop.call_later(_SWEEP_EVERY, self._sweep_limits)

    def stop(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    def _sweep_limits(self) -> None:
        self._sweep = self.loop.call_later(_SWEEP_EVERY, self._sweep_limits)
        self.limits.sweep()

    def reconfigure(self, cfg: Config) -> None:
        self.max_connections = connection_limit(cfg)
        self.limits.reconfigure(cfg.limits)

    def admit(self, ip: str, pending: int = 0) -> bool:
        """A connection about to start (TLS / PROXY listeners, before the handshake): room for it,
        and the per-IP limits let it in (then it counts until it closes). ``pending`` = others
        that were admitted and are still in their handshake."""
        if len(self._open) + pending >= self.max_connections:
            self._refused_count()
            return False
        return self.limits.admit(ip)

    def release(self, ip: str) -> None:
        """An admitted connection that never opened (its TLS handshake failed)."""
        self.limits.release(ip)

    def on_open(self, hook: Callable[[Channel], None]) -> None:
        self._on_open.append(hook)

    def on_forget(self, hook: Callable[[Channel], None]) -> None:
        """``hook(channel)`` runs once when a channel leaves (closed by us or by the peer)."""
        self._forget.append(hook)

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Channel]:
        return iter(tuple(self._open))

    # -- Registry ---------------------------------------------------------------------
    def opened(self, channel: Channel) -> None:
        self.stats["opened_ws" if channel.is_ws else "opened_tcp"] += 1
        origin = channel.origin
        if len(self._open) >= self.max_connections:
            if origin is not None and origin.admitted:
                self.limits.release(origin.ip)
            self.stats["limit_closed"] += 1
            self._refuse(channel)
            return
        if (origin is None or not origin.admitted) and not self.limits.admit(channel.peer_ip()):
            self.stats["ip_closed"] += 1
            channel.state = CLOSED
            channel.transport.abort()
            return
        self._open.add(channel)
        for hook in self._on_open:
            hook(channel)

    def closed(self, channel: Channel) -> None:
        """The transport is gone (the adapter's ``connection_lost``)."""
        self.stats["closed_ws" if channel.is_ws else "closed_tcp"] += 1
        if channel.is_gozero:
            self.stats["closed_gozero"] += 1
        if channel.state != CLOSED:  # the client went first
            self.stats["client_closed"] += 1
            self._leave(channel)
        if channel in self._open:
            self._open.remove(channel)
            self.limits.release(channel.peer_ip())

    def close(self, channel: Channel, *, abort: bool = False, notify: bool = False) -> None:
        """Leave every table now, then close the transport (flushing unless ``abort``)."""
        if channel.state == CLOSED:
            return
        self._leave(channel)
        if notify:
            channel.send_frame(_DISCONNECT)
        if abort:
            channel.transport.abort()
        else:
            channel.close_transport()

    def peer_closed(self, channel: Channel) -> None:
        """The client said goodbye (a WebSocket close frame): close, counted as the client's doing."""
        if channel.state != CLOSED:
            self.stats["client_closed"] += 1
        self.close(channel)

    def reject(self, channel: Channel, reason: str) -> None:
        """The peer broke the protocol: log once and close cleanly. A client that asked for caps
        hears op 6 first (it reconnects and resumes); a goim client gets goim's plain close."""
        if channel.state == CLOSED:
            return
        self.stats["bad_input"] += 1
        self.stats["rejected"] += 1
        log.info("closing %s: %s", channel.peer(), reason)
        self.close(channel, notify=channel.state == AUTHED and channel.caps != 0)

    # -- internals --------------------------------------------------------------------
    def _leave(self, channel: Channel) -> None:
        for hook in self._forget:
            hook(channel)
        channel.state = CLOSED

    def _refuse(self, channel: Channel) -> None:
        """Over ``max_connections``: close at once; one log line per 10 s at most."""
        channel.state = CLOSED
        channel.transport.abort()
        self._refused_count()

    def _refused_count(self) -> None:
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
