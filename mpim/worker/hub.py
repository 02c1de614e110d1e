"""The worker's composition root: builds the pieces and wires them together.

- :class:`~mpim.worker.connections.Connections` — every open connection, the limit, closing;
- :class:`~mpim.worker.deadlines.Deadlines` — handshake/heartbeat deadlines, slow consumers;
- :class:`~mpim.worker.sessions.Sessions` — auth with the router, keys (buckets), rooms, kicks;
- :class:`~mpim.worker.delivery.Delivery` — pushes by key, to rooms, to everyone;
- :class:`~mpim.worker.gzservice.GoZeroService` — the go-zero endpoint's upgrade and frames;
- the :class:`~mpim.worker.link.ClusterLink` — the router and the bus (or nothing, standalone).

Channels see only the narrow protocols of :mod:`mpim.worker.channel`; the link
sees only :mod:`mpim.worker.link`'s targets. The hub itself holds no per-connection
state and adds only the lifecycle (start, reconfigure, drain, stop).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterator
from typing import Any

from mpim.config import Config
from mpim.worker.bucket import Buckets
from mpim.worker.channel import CLOSED, Channel
from mpim.worker.connections import Connections
from mpim.worker.deadlines import Deadlines
from mpim.worker.delivery import Delivery
from mpim.worker.gzchannel import GoZeroChannel
from mpim.worker.gzservice import GoZeroService
from mpim.worker.iplimits import STATS as LIMIT_STATS
from mpim.worker.link import ClusterLink, StandaloneLink
from mpim.worker.meter import Meter
from mpim.worker.ratelimit import RateLimits
from mpim.worker.reliable import ReliableDelivery
from mpim.worker.room import RoomTable
from mpim.worker.sessions import Sessions
from mpim.worker.upstream import UpstreamService

STATS = (
    *("auth_ok", "auth_fail", "kicked", "slow_cut", "bad_input", "refused"),
    *LIMIT_STATS,
    *("auth_denied", "proxy_refused", "tls_failed"),
    *(
        "reliable_sent",
        "resumes",
        "unrecovered",
        "ack_cut",
        "messages",
        "unconfirmed",
        "rate_cut",
        "replay_cut",
        "catchups",
        "acks_clamped",
    ),
    # connections accepted / lost per transport, and why each one closed (the metrics)
    *("opened_tcp", "opened_ws", "closed_tcp", "closed_ws", "client_closed", "rejected", "drained"),
    # the go-zero endpoint: upgrades on its path (also in opened_ws), closes (also in closed_ws), frames
    *("opened_gozero", "closed_gozero", "gozero_data", "gozero_pings", "gozero_acks", "gozero_bad"),
    "gozero_errors",
    *("handshake_timeout", "register_timeout", "heartbeat_timeout", "limit_closed", "ip_closed"),
    "slow_cut_bytes",
)


class Hub:
    def __init__(self, cfg: Config, loop: asyncio.AbstractEventLoop, link: ClusterLink | None = None) -> None:
        self.cfg = cfg
        self.loop = loop
        self.link: ClusterLink = link or StandaloneLink()
        self.stats: collections.Counter[str] = collections.Counter(dict.fromkeys(STATS, 0))
        stats: Any = self.stats
        self.registry = Connections(cfg, loop, stats)
        self.deadlines = Deadlines(cfg, loop, self.registry, stats)
        self.buckets = Buckets(cfg.room.buckets)
        self.meter = Meter()
        self.rooms = RoomTable(
            loop,
            cfg.room,
            self.link.room_opened,
            self.link.room_closed,
            meter=self.meter,
        )
        self.rate_limits = RateLimits(cfg, loop, self.registry, stats)
        self.reliable = ReliableDelivery(cfg, loop, self.registry, self.link, stats)
        self.upstream = UpstreamService(cfg, loop, self.registry, self.link, stats, self.rate_limits)
        self.sessions = Sessions(
            cfg,
            self.registry,
            self.deadlines,
            self.buckets,
            self.rooms,
            self.link,
            stats,
            self.reliable,
            self.upstream,
            self.rate_limits,
        )
        self.delivery = Delivery(loop, self.buckets, self.rooms, self.reliable)
        self.gozero = GoZeroService(
            cfg,
            self.registry,
            self.deadlines,
            self.sessions,
            self.reliable,
            self.upstream,
            self.link,
            stats,
            self.rate_limits,
        )
        self.gozero.channel_class = self.channel_class(GoZeroChannel)
        self.deadlines.on_tick(self.reliable.tick)
        self.deadlines.on_tick(self.upstream.tick)
        self.registry.on_open(self.deadlines.handshake)
        self.registry.on_forget(self.deadlines.forget)
        self.registry.on_forget(self.sessions.forget)
        self.sessions.on_auth_failed = lambda channel: self.registry.limits.auth_failed(channel.peer_ip())
        self.link.attach(self.sessions, self.delivery, self)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self.deadlines.start()
        self.registry.start()

    def stop(self) -> None:
        self.deadlines.stop()
        self.registry.stop()
        self.delivery.stop()

    def reconfigure(self, cfg: Config) -> None:
        """Apply the settings that can change live (limits, batching, auth secret)."""
        self.cfg = cfg
        self.registry.reconfigure(cfg)
        self.deadlines.reconfigure(cfg)
        self.sessions.reconfigure(cfg)
        self.rate_limits.reconfigure(cfg)
        self.reliable.reconfigure(cfg)
        self.upstream.reconfigure(cfg)
        self.gozero.reconfigure(cfg)
        self.rooms.reconfigure(cfg.room)

    def channel_class(self, base: type[Any]) -> type[Any]:
        """A subclass of an adapter bound to this worker's services (as class attributes)."""
        bound = {
            "__slots__": (),
            "registry": self.registry,
            "flow": self.deadlines,
            "sessions": self.sessions,
            "gozero": self.gozero,
            "__module__": base.__module__,
        }
        return type(base.__name__, (base,), bound)

    def drain(self) -> int:
        """Tell every client to go (op 6) after flushing queued room pushes; returns how many."""
        self.delivery.flush()
        channels = list(self.registry)
        self.stats["drained"] += sum(1 for channel in channels if channel.state != CLOSED)
        for channel in channels:
            self.registry.close(channel, notify=True)
        return len(channels)

    # -- views (status reports, tests) ---------------------------------------------------
    def __iter__(self) -> Iterator[Channel]:
        """Every open connection, authenticated or not."""
        return iter(self.registry)

    @property
    def connections(self) -> int:
        """Open connections, authenticated or not."""
        return len(self.registry)

    @property
    def online(self) -> int:
        """Authenticated connections."""
        return self.sessions.online

    def local_counts(self) -> dict[str, int]:
        return {room.id: len(room) for room in self.rooms}

    def counters(self) -> dict[str, int]:
        """Monotonic counters and a few gauges (connections, online, rooms, conns_*), for reports."""
        stats = self.stats
        gozero = stats["opened_gozero"] - stats["closed_gozero"]
        return {
            **stats,
            **self.meter.counters(),
            "bytes_in": self.registry.bytes_in,
            "connections": len(self.registry),
            "conns_tcp": stats["opened_tcp"] - stats["closed_tcp"],
            "conns_ws": stats["opened_ws"] - stats["closed_ws"] - gozero,
            "conns_gozero": gozero,
            "online": self.online,
            "rooms": len(self.rooms),
            **self.rooms.counters(),
            "now_ms": int(time.monotonic() * 1000),  # when these were counted (rates per report)
        }

    # Delivery, for tests and the standalone worker.
    def push_keys(self, op: int, keys: list[str], body: bytes) -> int:
        return self.delivery.push_keys(op, keys, body)

    def push_room(self, op: int, room_id: str, body: bytes) -> bool:
        return self.delivery.push_room(op, room_id, body)

    def push_all(self, op: int, speed: int, body: bytes) -> None:
        self.delivery.push_all(op, speed, body)
